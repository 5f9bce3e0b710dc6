//! The schema the web example's queries are prepared against.
//!
//! `web-example-ddl <sqlite|postgres>` prints it (what `schema/<name>.sql`
//! holds); `web-example-ddl <sqlite|postgres> <url>` creates it in the
//! (existing) database at `url` by running the app's migrations and
//! rowseal's, exactly as the app does at start-up
//! (`web_example::schema::create`). Used by `scripts/sqlx-prepare.sh`,
//! built with `--no-default-features` so that it compiles without any
//! checked query, before the queries are prepared.

use rowseal::sqlx::{Executor, IntoArguments, Pool};
use web_example::schema;

type Error = Box<dyn std::error::Error>;

async fn apply<DB: rowseal::Backend>(url: &str) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    DB::Connection: sqlx::migrate::Migrate,
{
    let pool = rowseal::sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(1)
        .connect(url)
        .await?;
    schema::create::<DB>(&pool).await?;
    pool.close().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    use rowseal::sqlx::{Postgres, Sqlite};
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["sqlite"] => print!("{}", schema::ddl::<Sqlite>()),
        ["postgres"] => print!("{}", schema::ddl::<Postgres>()),
        ["sqlite", url] => apply::<Sqlite>(url).await?,
        ["postgres", url] => apply::<Postgres>(url).await?,
        _ => return Err("usage: web-example-ddl <sqlite|postgres> [url]".into()),
    }
    Ok(())
}
