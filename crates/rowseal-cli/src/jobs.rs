//! Jobs in `rowseal_jobs`: creation, progress (committed in the same
//! transaction as the rows it counts), heartbeats and completion.

use rowseal_sqlx::Value;

use crate::db::{ph, read_i64, read_text, CliDb};
use crate::error::Result;

/// A job row.
#[derive(Debug, Clone)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Kind (`rotate`, `rewrap`, ...).
    pub kind: String,
    /// State.
    pub state: String,
    /// Parameters (JSON).
    pub params: serde_json::Value,
    /// Rows done so far, over every process.
    pub rows_done: i64,
}

/// This process, as shown in `rowseal_jobs.worker`.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Inserts a running job.
pub async fn create<D: CliDb>(
    conn: &mut D::Connection,
    kind: &str,
    params: &serde_json::Value,
) -> Result<String> {
    let id = format!("{kind}-{}", uuid::Uuid::new_v4().simple());
    let sql = format!(
        "INSERT INTO rowseal_jobs (id, kind, params, state, worker, rows_done, heartbeat_at) VALUES ({}, {}, {}, 'running', {}, 0, CURRENT_TIMESTAMP)",
        ph::<D>(1),
        ph::<D>(2),
        ph::<D>(3),
        ph::<D>(4)
    );
    D::execute_on(
        conn,
        &sql,
        vec![
            Value::Text(id.clone()),
            Value::Text(kind.to_owned()),
            Value::Text(params.to_string()),
            Value::Text(worker_name()),
        ],
    )
    .await?;
    Ok(id)
}

fn parse(row: &impl rowseal_sqlx::DbRow) -> Result<Job> {
    let params = read_text(row, 3)?;
    Ok(Job {
        id: read_text(row, 0)?,
        kind: read_text(row, 1)?,
        state: read_text(row, 2)?,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        rows_done: read_i64(row, 4)?,
    })
}

const COLS: &str = "id, kind, state, params, rows_done";

/// One job.
pub async fn get<D: CliDb>(conn: &mut D::Connection, id: &str) -> Result<Option<Job>> {
    let sql = format!("SELECT {COLS} FROM rowseal_jobs WHERE id = {}", ph::<D>(1));
    let rows = D::fetch_all_on(conn, &sql, vec![Value::Text(id.to_owned())]).await?;
    rows.first().map(parse).transpose()
}

/// Running jobs of a kind, oldest first.
pub async fn running<D: CliDb>(conn: &mut D::Connection, kind: &str) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {COLS} FROM rowseal_jobs WHERE state = 'running' AND kind = {} ORDER BY created_at, id",
        ph::<D>(1)
    );
    let rows = D::fetch_all_on(conn, &sql, vec![Value::Text(kind.to_owned())]).await?;
    rows.iter().map(parse).collect()
}

/// Adds `rows` to the job's count and beats its heartbeat. Called inside the
/// batch's transaction, so the count commits with the rows it counts.
pub async fn add_progress<D: CliDb>(conn: &mut D::Connection, id: &str, rows: u64) -> Result<()> {
    let sql = format!(
        "UPDATE rowseal_jobs SET rows_done = rows_done + {}, heartbeat_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP, worker = {} WHERE id = {}",
        ph::<D>(1),
        ph::<D>(2),
        ph::<D>(3)
    );
    D::execute_on(
        conn,
        &sql,
        vec![
            Value::I64(i64::try_from(rows).unwrap_or(i64::MAX)),
            Value::Text(worker_name()),
            Value::Text(id.to_owned()),
        ],
    )
    .await?;
    Ok(())
}

/// Ends a running job (`done` or `failed`), with a summary checkpoint.
pub async fn finish<D: CliDb>(
    conn: &mut D::Connection,
    id: &str,
    state: &str,
    checkpoint: &serde_json::Value,
) -> Result<()> {
    let sql = format!(
        "UPDATE rowseal_jobs SET state = {}, checkpoint = {}, updated_at = CURRENT_TIMESTAMP WHERE id = {} AND state = 'running'",
        ph::<D>(1),
        ph::<D>(2),
        ph::<D>(3)
    );
    D::execute_on(
        conn,
        &sql,
        vec![
            Value::Text(state.to_owned()),
            Value::Text(checkpoint.to_string()),
            Value::Text(id.to_owned()),
        ],
    )
    .await?;
    Ok(())
}
