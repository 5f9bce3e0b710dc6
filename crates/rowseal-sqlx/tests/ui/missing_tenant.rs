use rowseal_sqlx::Encrypted;

#[derive(Encrypted)]
#[rowseal(table = "t", primary_key = id, record_type = "no_tenant")]
struct NoTenant {
    id: i64,
    #[rowseal(encrypt)]
    secret: String,
}

#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant_id, primary_key = pk, record_type = "wrong_names")]
struct WrongNames {
    id: i64,
    tenant: String,
}

fn main() {}
