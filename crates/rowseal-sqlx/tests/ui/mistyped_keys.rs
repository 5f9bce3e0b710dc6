use rowseal_sqlx::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: f64,
    tenant: f32,
    #[rowseal(encrypt)]
    secret: String,
}

fn main() {}
