use rowseal_sqlx::Encrypted;

// Blind-index declaration mistakes, all reported in one compilation.
#[derive(Encrypted)]
#[rowseal(
    table = "t",
    tenant = tenant,
    primary_key = id,
    compound_index(name = "one_idx", fields(a)),
    compound_index(name = "pair_idx", fields(a, nope), bits = 32),
    record_type = "model",
)]
struct Model {
    id: i64,
    tenant: String,
    #[rowseal(encrypt, blind_index(name = "a_idx", bits = 0, normalize = "trim,upper", scope = "world"))]
    a: String,
    #[rowseal(blind_index(name = "plain_idx"))]
    plain: String,
    #[rowseal(encrypt, blind_index(name = "a_idx", colour = "red"))]
    b: String,
    #[rowseal(encrypt, blind_index(name = "bad name"))]
    c: String,
}

fn main() {}
