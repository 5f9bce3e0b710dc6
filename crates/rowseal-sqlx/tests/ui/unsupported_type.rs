use std::collections::HashMap;

use rowseal_sqlx::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt)]
    secret: HashMap<String, String>,
}

fn main() {}
