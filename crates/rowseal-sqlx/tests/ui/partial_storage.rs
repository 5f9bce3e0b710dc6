use rowseal_sqlx::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt)]
    secret: String,
    count: i64,
}

// Declared otherwise than the model stores them: `secret` without
// `encrypt`, `count` with it.
#[derive(Encrypted)]
#[rowseal(partial_of = Model)]
struct Mismatched {
    id: i64,
    secret: String,
    #[rowseal(encrypt)]
    count: i64,
}

fn main() {}
