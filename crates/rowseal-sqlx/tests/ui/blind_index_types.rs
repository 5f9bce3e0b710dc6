use rowseal_sqlx::Encrypted;

fn wrong_signature(s: String) -> String {
    s
}

// Type errors point at the field type and the normalizer path.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt, blind_index(name = "bytes_idx"))]
    bytes: Vec<u8>,
    #[rowseal(encrypt, blind_index(name = "s_idx", normalize_with = wrong_signature))]
    s: String,
}

fn main() {}
