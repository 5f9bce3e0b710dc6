use rowseal_sqlx::Encrypted;

// Every attribute mistake below is reported in one compilation.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = idd, key_mode = "per-row", colour = "red", record_type = "model")]
struct Model {
    id: i64,
    #[rowseal(encrypt)]
    tenant: String,
    #[rowseal(json)]
    a: String,
    #[rowseal(encrypt, column = "rowseal_header")]
    b: String,
    #[rowseal(encrypt, blind_index(bits = 32))]
    c: String,
    #[rowseal(encrypt, frobnicate)]
    d: String,
}

fn main() {}
