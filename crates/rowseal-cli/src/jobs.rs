//! Jobs in `rowseal_jobs`: creation, progress (committed in the same
//! transaction as the rows it counts), heartbeats and completion.

use rowseal_sqlx::Value;
use serde_json::json;

use crate::db::{ph, read_i64, read_text, CliDb};
use crate::error::{CliError, Result};

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
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "host".into());
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

/// How long a lock holder on another host may stay silent before its start
/// is taken over (on the same host, a dead holder is noticed at once).
const START_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// The outcome of [`start_lock`].
#[derive(Debug)]
pub enum Start {
    /// This process starts (or joins) the job of the scope; call
    /// [`StartLock::release`] with the job's id when it is recorded.
    Lead(StartLock),
    /// Another process started the job of this scope at the same time: join
    /// this job (whatever its state).
    Join(String),
}

/// A held start lock of a job scope.
#[derive(Debug)]
pub struct StartLock {
    id: String,
    generation: i64,
    worker: String,
    beats: u64,
    /// What a previous holder that died had recorded (`params.planned`), if
    /// this lock was taken over.
    pub taken_over: Option<serde_json::Value>,
}

fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The start-lock row of a job scope: one row per (kind, scope) in
/// `rowseal_jobs`, kind `<kind>-start`, state `idle` or `starting`;
/// `rows_done` counts the starts (a generation), `checkpoint` names the job
/// the last start recorded.
fn lock_id(kind: &str, scope: &serde_json::Value) -> String {
    format!("{kind}-start-{:016x}", fnv64(&scope.to_string()))
}

struct LockRow {
    state: String,
    generation: i64,
    checkpoint: String,
    worker: String,
    params: String,
}

async fn read_lock<D: CliDb>(conn: &mut D::Connection, id: &str) -> Result<Option<LockRow>> {
    let sql = format!(
        "SELECT state, rows_done, checkpoint, worker, params FROM rowseal_jobs WHERE id = {}",
        ph::<D>(1)
    );
    let rows = D::fetch_all_on(conn, &sql, vec![Value::Text(id.to_owned())]).await?;
    rows.first()
        .map(|r| {
            Ok(LockRow {
                state: read_text(r, 0)?,
                generation: read_i64(r, 1)?,
                checkpoint: read_text(r, 2)?,
                worker: read_text(r, 3)?,
                params: read_text(r, 4)?,
            })
        })
        .transpose()
}

/// Whether the process named `worker` (`host:pid`) is known to be dead: on
/// this host, its pid no longer exists (Linux `/proc`).
fn known_dead(worker: &str) -> bool {
    let Some((host, pid)) = worker.rsplit_once(':') else {
        return false;
    };
    let me = worker_name();
    let my_host = me.rsplit_once(':').map_or("", |(h, _)| h);
    if host == "host" || host != my_host || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    pid.parse::<u32>()
        .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// Serializes the start of a job of `kind` over `scope` across processes, so
/// that runs started at the same moment create one job (and one set of new
/// key versions), not one each. The first run takes the lock
/// ([`Start::Lead`]); a run that finds a start in progress, or loses the race
/// for the lock, waits for it and joins the job it recorded
/// ([`Start::Join`]). A holder that died (kill -9) is taken over: at once on
/// the same host, after a minute of silence from another host.
pub async fn start_lock<D: CliDb>(
    conn: &mut D::Connection,
    kind: &str,
    scope: &serde_json::Value,
) -> Result<Start> {
    let id = lock_id(kind, scope);
    let me = worker_name();
    if read_lock::<D>(conn, &id).await?.is_none() {
        let sql = format!(
            "INSERT INTO rowseal_jobs (id, kind, params, state, worker, rows_done, checkpoint) VALUES ({}, {}, {}, 'idle', {}, 0, '')",
            ph::<D>(1),
            ph::<D>(2),
            ph::<D>(3),
            ph::<D>(4)
        );
        let ins = D::execute_on(
            conn,
            &sql,
            vec![
                Value::Text(id.clone()),
                Value::Text(format!("{kind}-start")),
                Value::Text(json!({"scope": scope}).to_string()),
                Value::Text(me.clone()),
            ],
        )
        .await;
        // Another process inserted it first: fine.
        if let Err(e) = ins {
            if read_lock::<D>(conn, &id).await?.is_none() {
                return Err(e.into());
            }
        }
    }
    'restart: loop {
        let Some(row) = read_lock::<D>(conn, &id).await? else {
            return Err(CliError::db("the job start lock vanished"));
        };
        // The start this run joins if it does not lead.
        let target = if row.state == "idle" {
            let sql = format!(
                "UPDATE rowseal_jobs SET state = 'starting', worker = {}, rows_done = {}, params = {}, updated_at = CURRENT_TIMESTAMP WHERE id = {} AND state = 'idle' AND rows_done = {}",
                ph::<D>(1),
                ph::<D>(2),
                ph::<D>(3),
                ph::<D>(4),
                ph::<D>(5)
            );
            let generation = row.generation + 1;
            let won = D::execute_on(
                conn,
                &sql,
                vec![
                    Value::Text(me.clone()),
                    Value::I64(generation),
                    Value::Text(json!({"scope": scope, "beat": 0}).to_string()),
                    Value::Text(id.clone()),
                    Value::I64(row.generation),
                ],
            )
            .await?;
            if won == 1 {
                return Ok(Start::Lead(StartLock {
                    id,
                    generation,
                    worker: me,
                    beats: 0,
                    taken_over: None,
                }));
            }
            generation
        } else {
            row.generation
        };
        let mut last_params = String::new();
        let mut quiet_since = std::time::Instant::now();
        loop {
            let Some(row) = read_lock::<D>(conn, &id).await? else {
                return Err(CliError::db("the job start lock vanished"));
            };
            if row.state == "idle" && row.generation >= target {
                if row.checkpoint.is_empty() {
                    // That start failed: try again (possibly leading).
                    continue 'restart;
                }
                return Ok(Start::Join(row.checkpoint));
            }
            if row.state == "starting" && row.generation == target {
                if row.params != last_params {
                    last_params = row.params.clone();
                    quiet_since = std::time::Instant::now();
                }
                if known_dead(&row.worker) || quiet_since.elapsed() > START_STALE {
                    let sql = format!(
                        "UPDATE rowseal_jobs SET worker = {}, updated_at = CURRENT_TIMESTAMP WHERE id = {} AND state = 'starting' AND rows_done = {} AND worker = {}",
                        ph::<D>(1),
                        ph::<D>(2),
                        ph::<D>(3),
                        ph::<D>(4)
                    );
                    let won = D::execute_on(
                        conn,
                        &sql,
                        vec![
                            Value::Text(me.clone()),
                            Value::Text(id.clone()),
                            Value::I64(target),
                            Value::Text(row.worker.clone()),
                        ],
                    )
                    .await?;
                    if won == 1 {
                        let planned = serde_json::from_str::<serde_json::Value>(&row.params)
                            .ok()
                            .and_then(|p| p.get("planned").cloned());
                        return Ok(Start::Lead(StartLock {
                            id,
                            generation: target,
                            worker: me,
                            beats: 0,
                            taken_over: planned,
                        }));
                    }
                }
            } else if row.state == "starting" && row.generation > target {
                // Our start ended and another began: it joins or records the
                // job of ours; wait for it.
                continue 'restart;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl StartLock {
    /// Records progress of the start (`planned`: what was created so far,
    /// reused by a process that takes the start over if this one dies).
    pub async fn beat<D: CliDb>(
        &mut self,
        conn: &mut D::Connection,
        scope: &serde_json::Value,
        planned: &serde_json::Value,
    ) -> Result<()> {
        self.beats += 1;
        let sql = format!(
            "UPDATE rowseal_jobs SET params = {}, updated_at = CURRENT_TIMESTAMP WHERE id = {} AND worker = {} AND rows_done = {}",
            ph::<D>(1),
            ph::<D>(2),
            ph::<D>(3),
            ph::<D>(4)
        );
        let n = D::execute_on(
            conn,
            &sql,
            vec![
                Value::Text(
                    json!({"scope": scope, "beat": self.beats, "planned": planned}).to_string(),
                ),
                Value::Text(self.id.clone()),
                Value::Text(self.worker.clone()),
                Value::I64(self.generation),
            ],
        )
        .await?;
        if n == 0 {
            return Err(CliError::new(
                crate::error::ExitCode::Refused,
                "another process took over this job's start (this one was too slow); run the command again to join it",
            ));
        }
        Ok(())
    }

    /// Ends the start: `job` is the job that runs the scope (`None`: the
    /// start failed, and a waiting run tries again).
    pub async fn release<D: CliDb>(
        self,
        conn: &mut D::Connection,
        job: Option<&str>,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE rowseal_jobs SET state = 'idle', checkpoint = {}, updated_at = CURRENT_TIMESTAMP WHERE id = {} AND worker = {} AND rows_done = {}",
            ph::<D>(1),
            ph::<D>(2),
            ph::<D>(3),
            ph::<D>(4)
        );
        D::execute_on(
            conn,
            &sql,
            vec![
                Value::Text(job.unwrap_or("").to_owned()),
                Value::Text(self.id.clone()),
                Value::Text(self.worker.clone()),
                Value::I64(self.generation),
            ],
        )
        .await?;
        Ok(())
    }
}
