//! The schema the queries are prepared against.
//!
//! `own-queries-ddl <sqlite|postgres|mysql>` prints it (what
//! `schema/<name>.sql` holds); `own-queries-ddl <name> <url>` creates it in
//! the (existing, empty) database at `url`. Used by
//! `scripts/sqlx-prepare.sh`; builds without any checked query.

use own_queries::{Appointment, Patient};
use rowseal::schema;

type Error = Box<dyn std::error::Error>;

async fn apply<DB: rowseal::Backend>(url: &str) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: rowseal::sqlx::Executor<'c, Database = DB>,
    for<'c> &'c rowseal::sqlx::Pool<DB>: rowseal::sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: rowseal::sqlx::IntoArguments<'q, DB>,
{
    let pool = rowseal::sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(1)
        .connect(url)
        .await?;
    schema::install(&pool).await?;
    schema::create_table::<Patient, _>(&pool).await?;
    schema::create_table::<Appointment, _>(&pool).await?;
    rowseal::sqlx::query(&own_queries::plain_patients_sql::<DB>())
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (which, url) = match args.as_slice() {
        [w] => (w.as_str(), None),
        [w, u] => (w.as_str(), Some(u.as_str())),
        _ => return Err("usage: own-queries-ddl <sqlite|postgres|mysql> [url]".into()),
    };
    match (which, url) {
        ("sqlite", None) => print!("{}", own_queries::ddl::<rowseal::sqlx::Sqlite>()),
        ("sqlite", Some(u)) => apply::<rowseal::sqlx::Sqlite>(u).await?,
        #[cfg(feature = "postgres")]
        ("postgres", None) => print!("{}", own_queries::ddl::<rowseal::sqlx::Postgres>()),
        #[cfg(feature = "postgres")]
        ("postgres", Some(u)) => apply::<rowseal::sqlx::Postgres>(u).await?,
        #[cfg(feature = "mysql")]
        ("mysql", None) => print!("{}", own_queries::ddl::<rowseal::sqlx::MySql>()),
        #[cfg(feature = "mysql")]
        ("mysql", Some(u)) => apply::<rowseal::sqlx::MySql>(u).await?,
        (other, _) => return Err(format!("no database {other:?} in this build").into()),
    }
    Ok(())
}
