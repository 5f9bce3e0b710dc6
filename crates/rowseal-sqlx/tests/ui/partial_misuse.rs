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

// What the model decides is not the view's to say.
#[derive(Encrypted)]
#[rowseal(partial_of = Model, table = "t", tenant = tenant, bind_primary_key)]
struct Restated {
    id: i64,
    #[rowseal(encrypt, column = "s", blind_index(name = "s_idx"))]
    secret: String,
}

// A field of another type, one stored otherwise, one the model lacks.
#[derive(Encrypted)]
#[rowseal(partial_of = Model)]
struct Mismatched {
    id: String,
    secret: String,
    #[rowseal(encrypt)]
    count: i64,
    missing: i64,
}

fn main() {}
