use rowseal_sqlx::Encrypted;

// The record type is bound into every ciphertext: it must be named, never
// taken from the struct's name (a rename would make every old row unreadable).
#[derive(Encrypted)]
#[rowseal(table = "patients", tenant = tenant_id, primary_key = id)]
struct Patient {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt, name = "")]
    name: String,
}

fn main() {}
