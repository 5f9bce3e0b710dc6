use rowseal_sqlx::Encrypted;

// A legacy plaintext column is read with the field's plain SQL type: an
// encrypted type with none (here u64) cannot migrate from one.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt, column = "n_ct", plaintext_column = "n")]
    n: u64,
}

fn main() {}
