//! Attribute parsing and code generation behind `#[derive(Encrypted)]`.
//!
//! This crate is an implementation detail of `rowseal-derive` (the proc-macro
//! shim) and is kept apart so that it can be tested as ordinary code. Parsing is
//! serde-style: every attribute mistake in a struct is collected and reported at
//! once, each with a span on the offending attribute or field.
//!
//! Container attributes, on the struct:
//! - `table = "patients"` (required): the table.
//! - `record_type = "patient"` (required): the record type bound into every
//!   ciphertext. Required, not derived from the struct's name, so that
//!   renaming the struct never makes old rows unreadable.
//! - `tenant = tenant_id` (required): the field holding the tenant (`String`,
//!   `Uuid`, `i64`, `i32` or a newtype implementing `TenantField`).
//! - `primary_key = id` (required): the primary-key field; or
//!   `primary_key = (tenant_id, id)` when the table's primary key is the
//!   tenant and that field (the norm in multi-tenant schemas: each tenant
//!   numbers its own rows). The tenant comes first and it is the only
//!   composite shape; `id` is what `find`, `bind_primary_key` and the
//!   generated `PrimaryKey` type mean, always together with the tenant.
//! - `key_mode = "derived"` or `"kms"` (default `"derived"`).
//! - `bind_primary_key`: bind the primary key into each ciphertext.
//! - `crate = "path"`: where the rowseal sqlx runtime is (default: found from
//!   the dependencies, `rowseal` or `rowseal-sqlx`).
//!
//! Field attributes:
//! - `encrypt`: store the field encrypted.
//! - `name = "email"`: the field's logical name, bound into its ciphertexts
//!   and recorded in the schema registry (default: the field name). Keep it
//!   when renaming the Rust field; `column` may change freely.
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
//! - `sql_type = "INTEGER"` (plain fields only): a field of any type sqlx
//!   encodes and decodes on every enabled database (`PassthroughField`: a
//!   `sqlx::Type` enum or newtype), passed through untouched, in a column of
//!   that SQL type. Not on the tenant or the primary key, not under a blind
//!   index, not `generated`. With `database = "postgres"` (`"mysql"`,
//!   `"sqlite"`): a type only that database has (arrays, enum types,
//!   `Decimal`), refused by a typed error on any other.
//! - `generated` or `generated = "<SQL default>"` (plain fields only): the
//!   database fills the column (an identity primary key, a `DEFAULT now()`
//!   timestamp); rowseal never writes it and `insert_returning` reads it
//!   back. Not on the tenant, not on a primary key with `bind_primary_key`
//!   or in a composite primary key, not under a blind index.
//!
//! Partial views: `#[rowseal(partial_of = Model)]` alone on a struct whose
//! fields are some of `Model`'s (same names and types, with `encrypt` and
//! `json` as `Model` has them: both checked at compile time; no other
//! attribute) generates a read-only `ReadModel` impl that reads and decrypts
//! only those fields.
//!
//! Container attribute for compound indexes:
//! - `compound_index(name = "name_dob_idx", fields(last_name, dob), bits = 32,
//!   normalize = "trim,lowercase", normalize_with = f, scope = "tenant",
//!   unique, column = "...")`: one index over several fields, each
//!   length-prefixed; `normalize` applies to every part unless a field has
//!   its own steps (`fields(ssn = "digits", city)`).
//!
//! Each index generates `T::find_by_<stem>(&encryptor, conn, tenant,
//! value...)` and `T::find_by_<stem>_in(&encryptor, conn, tenant, &[...])`,
//! and, over the bounded lookups, `T::find_by_<stem>_with(&encryptor, conn,
//! tenant, value..., &options)`, `T::count_by_<stem>(&encryptor, conn, tenant,
//! value...)` and `T::exists_by_<stem>(...)` (thin wrappers: the logic is in
//! rowseal-sqlx), where `<stem>` is the index name without a trailing `_idx`
//! or `_index`; global indexes take no tenant. A covered field named like a
//! parameter (`tenant`, `encryptor`, `executor`, `conn`, `options`) is passed
//! as `<name>_value`.
//!
//! Every model also gets `<Name>Sealed`: the row as stored, one public field
//! per column (named after it; encrypted columns as their bytes, plus
//! `rowseal_header`), with `sqlx::FromRow` and `from_row_prefixed`, opened by
//! `Encryptor::open`. Not for a model with `plaintext_column` fields.

// Laid out as serde_derive's internals: `attr` parses the attributes, `ast`
// resolves them into the model (fields, columns, indexes), `check` holds the
// checks across attributes and fields, `ctxt` collects the errors, and
// `expand` generates the code from the resolved model.
mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod resolve;

use proc_macro2::{Span, TokenStream};
use syn::DeriveInput;

/// Expands `#[derive(Encrypted)]`. Returns every mistake at once as one
/// combined error.
pub fn expand_encrypted(input: &DeriveInput) -> Result<TokenStream, syn::Error> {
    let mut cx = ctxt::Ctxt::new();
    let attrs = attr::ContainerAttrs::from_ast(&mut cx, input);
    if attrs.partial_of.is_some() {
        let partial = ast::Partial::from_ast(&mut cx, input, attrs);
        cx.check()?;
        let Some(partial) = partial else {
            return Err(syn::Error::new(Span::call_site(), "invalid attributes"));
        };
        return Ok(expand::expand_partial(&partial));
    }
    let cont = ast::Container::from_ast(&mut cx, input, attrs);
    cx.check()?;
    let Some(cont) = cont else {
        return Err(syn::Error::new(Span::call_site(), "invalid attributes"));
    };
    Ok(expand::expand(&cont))
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
            r#"#[rowseal(table = "patients", record_type = "patient", tenant = tenant_id, primary_key = id, bind_primary_key, crate = "x")]
            struct Patient { id: i64, tenant_id: String, #[rowseal(encrypt, column = "dob")] birth: Option<String> }"#,
        )
        .unwrap();
        assert!(out.contains("\"patient\""));
        assert!(out.contains("\"dob\""));
        assert!(out.contains("with_primary_key_bound (true)"));
    }

    #[test]
    fn composite_primary_keys_lead_with_the_tenant() {
        let out = expand(
            r#"#[rowseal(table = "t", record_type = "r", tenant = org, primary_key = (org, id), bind_primary_key, crate = "x")]
            struct M { id: i64, org: String, #[rowseal(encrypt)] a: String }"#,
        )
        .unwrap();
        assert!(out.contains("with_tenant_in_primary_key (true)"), "{out}");
        assert!(out.contains("type PrimaryKey = i64"), "{out}");
        let single = expand(
            r#"#[rowseal(table = "t", record_type = "r", tenant = org, primary_key = id, crate = "x")]
            struct M { id: i64, org: String }"#,
        )
        .unwrap();
        assert!(single.contains("with_tenant_in_primary_key (false)"));
        for (key, needle) in [
            (
                "(id, org)",
                "put the tenant first: `primary_key = (org, id)`",
            ),
            (
                "(id, other)",
                "a composite primary key is the tenant and one key field",
            ),
            (
                "(org, id, other)",
                "a composite primary key is the tenant and one key field",
            ),
            (
                "(org, org)",
                "the tenant and the primary key must be different fields",
            ),
            ("(org, nope)", "no field named `nope` for the primary_key"),
            (
                "(org, \"id\")",
                "expected a field name, or `(tenant_field, key_field)`",
            ),
        ] {
            let err = expand(&format!(
                r#"#[rowseal(table = "t", record_type = "r", tenant = org, primary_key = {key}, crate = "x")]
                struct M {{ id: i64, org: String, other: i64 }}"#
            ))
            .unwrap_err();
            assert!(err.contains(needle), "{key}: {err}");
            assert!(
                !err.contains("missing #[rowseal(primary_key"),
                "{key}: {err}"
            );
        }
        let err = expand(
            r#"#[rowseal(table = "t", record_type = "r", tenant = org, primary_key = (org, id), crate = "x")]
            struct M { #[rowseal(generated)] id: i64, org: String }"#,
        )
        .unwrap_err();
        assert!(
            err.contains("cannot be part of a composite primary key"),
            "{err}"
        );
    }

    #[test]
    fn logical_names_default_to_the_field_and_can_be_kept_across_renames() {
        let out = expand(
            r#"#[rowseal(table = "people", record_type = "person", tenant = t, primary_key = id, crate = "x")]
            struct Person { id: i64, t: String,
                #[rowseal(encrypt, name = "email", column = "mail_ct")] contact_email: String,
                #[rowseal(encrypt)] phone: String }"#,
        )
        .unwrap();
        for needle in [
            "\"contact_email\" , \"mail_ct\"",
            "with_logical_name (\"email\")",
            "with_logical_name (\"phone\")",
        ] {
            assert!(out.contains(needle), "{needle} not in {out}");
        }
        let err = expand(
            r#"#[rowseal(table = "people", tenant = t, primary_key = id, crate = "x")]
            struct Person { id: i64, t: String, #[rowseal(encrypt, name = "")] a: String }"#,
        )
        .unwrap_err();
        for needle in ["missing #[rowseal(record_type = ", "name must not be empty"] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
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
            "missing #[rowseal(record_type = ",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn expands_blind_indexes() {
        let out = expand(
            r#"#[rowseal(table = "users", record_type = "user", tenant = t, primary_key = id, crate = "x",
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
            "fn find_by_a_with <",
            "fn count_by_a <",
            "fn exists_by_a <",
            "fn find_by_pair_with <",
            ". find_by_with :: < Self , __A >",
            ". count_by :: < Self , __A >",
            ". exists_by :: < Self , __A >",
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
        for f in ["find_by_pair_with", "count_by_pair", "exists_by_pair"] {
            let rest = out.split(&format!("fn {f} <")).nth(1).unwrap_or("");
            let sig = rest.split("->").next().unwrap_or("");
            assert!(!sig.contains("tenant"), "{f}: {sig}");
        }
    }

    #[test]
    fn lookup_parameter_names_do_not_clash() {
        let out = expand(
            r#"#[rowseal(table = "t", record_type = "p", tenant = t, primary_key = id, crate = "x",
                compound_index(name = "both_idx", fields(options, conn)))]
            struct P { id: i64, t: String,
                #[rowseal(encrypt, blind_index(name = "options_idx"))] options: String,
                #[rowseal(encrypt)] conn: String }"#,
        )
        .unwrap();
        for needle in [
            "options_value : & str , options : & x :: Lookup",
            "conn : __A",
            "& [& [options_value , conn_value]]",
        ] {
            assert!(out.contains(needle), "{needle} not in {out}");
        }
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
    fn normalization_steps_are_core_builtins() {
        expand(
            r#"#[rowseal(table = "t", record_type = "p", tenant = t, primary_key = id, crate = "x")]
            struct P { id: i64, t: String,
                #[rowseal(encrypt, blind_index(name = "a_idx", normalize = "trim, lowercase, nfc, digits, alnum, last4, last(2)"))]
                a: String }"#,
        )
        .unwrap();
        let err = expand(
            r#"#[rowseal(table = "t", tenant = t, primary_key = id, crate = "x")]
            struct P { id: i64, t: String,
                #[rowseal(encrypt, blind_index(name = "a_idx", normalize = "last0, trim, Upper"))]
                a: String }"#,
        )
        .unwrap_err();
        let expected = "expected a comma-separated list of: trim, lowercase, nfc, digits, alnum, lastN (use normalize_with for your own)";
        for needle in [
            "unknown normalization `last0`",
            "unknown normalization `Upper`",
            expected,
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
        assert!(!err.contains("`trim`"), "{err}");
    }
}
