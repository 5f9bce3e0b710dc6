use rowseal_sqlx::Encrypted;

// A composite primary key is `(tenant, key)`: the tenant after the key,
// a pair without the tenant, three fields, something that is not a field
// name, and a generated key inside the pair are each refused.
#[derive(Encrypted)]
#[rowseal(table = "a", record_type = "a", tenant = org, primary_key = (id, org))]
struct TenantLast {
    id: i64,
    org: String,
}

#[derive(Encrypted)]
#[rowseal(table = "b", record_type = "b", tenant = org, primary_key = (id, region))]
struct NoTenant {
    id: i64,
    region: i32,
    org: String,
}

#[derive(Encrypted)]
#[rowseal(table = "c", record_type = "c", tenant = org, primary_key = (org, region, id))]
struct ThreeFields {
    id: i64,
    region: i32,
    org: String,
}

#[derive(Encrypted)]
#[rowseal(table = "d", record_type = "d", tenant = org, primary_key = (org, 1))]
struct NotAField {
    id: i64,
    org: String,
}

#[derive(Encrypted)]
#[rowseal(table = "e", record_type = "e", tenant = org, primary_key = (org, id))]
struct GeneratedInPair {
    #[rowseal(generated)]
    id: i64,
    org: String,
}

fn main() {}
