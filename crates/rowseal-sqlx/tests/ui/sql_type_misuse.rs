use rowseal_sqlx::Encrypted;

// `sql_type` with `encrypt`, on the tenant, with `generated`, empty;
// `database` without `sql_type` or naming no database; and a type sqlx
// cannot encode.
#[derive(Encrypted)]
#[rowseal(table = "t", tenant = tenant, primary_key = id, record_type = "model")]
struct Model {
    id: i64,
    #[rowseal(sql_type = "TEXT")]
    tenant: String,
    #[rowseal(encrypt, sql_type = "BYTEA")]
    secret: String,
    #[rowseal(generated, sql_type = "INTEGER")]
    counter: i64,
    #[rowseal(sql_type = " ")]
    blank: i64,
    #[rowseal(database = "postgres")]
    no_type: i64,
    #[rowseal(sql_type = "TEXT", database = "oracle")]
    elsewhere: String,
}

struct NotSqlx;

#[derive(Encrypted)]
#[rowseal(table = "u", tenant = tenant, primary_key = id, record_type = "other")]
struct Other {
    id: i64,
    tenant: String,
    #[rowseal(sql_type = "TEXT")]
    thing: NotSqlx,
}

fn main() {}
