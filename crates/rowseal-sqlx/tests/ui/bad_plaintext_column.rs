use rowseal_sqlx::Encrypted;

// `plaintext_column` mistakes, all reported in one compilation.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    // Not encrypted: there is nothing to migrate into.
    #[rowseal(plaintext_column = "a_plain")]
    a: String,
    // The ciphertext would overwrite the plaintext it migrates from.
    #[rowseal(encrypt, plaintext_column = "b")]
    b: String,
    // Another field's column.
    #[rowseal(encrypt, column = "c_ct", plaintext_column = "tenant")]
    c: String,
    // JSON fields have no plain SQL type to read the legacy column as.
    #[rowseal(encrypt, json, column = "d_ct", plaintext_column = "d")]
    d: Vec<String>,
    // Reserved by rowseal, and not an SQL name.
    #[rowseal(encrypt, column = "e_ct", plaintext_column = "rowseal_header")]
    e: String,
    #[rowseal(encrypt, column = "f_ct", plaintext_column = "f; DROP")]
    f: String,
}

fn main() {}
