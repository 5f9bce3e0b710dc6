use rowseal_sqlx::Encrypted;

// Every misuse of `generated` at once: on an encrypted field, on the
// tenant, on a primary key bound into the ciphertexts, under a blind index,
// twice, and with an empty default.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model",
          bind_primary_key,
          compound_index(name = "stamp_idx", fields(secret, stamp)))]
struct Model {
    #[rowseal(generated)]
    id: i64,
    #[rowseal(generated)]
    tenant: String,
    #[rowseal(encrypt, generated)]
    secret: String,
    #[rowseal(generated, generated = "")]
    stamp: i64,
}

fn main() {}
