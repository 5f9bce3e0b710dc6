use rowseal_sqlx::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, encrypted_by_default, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt, colum = "x")]
    secret: String,
}

fn main() {}
