//! The embedded transport: workers inside the server process claim due tasks from the
//! database with a lease, run them, and record the outcome. The same `run_claimed` is what
//! an HTTP worker route (QStash) calls, so both transports run the same task code.
//!
//! Claiming is one statement on both databases: an `UPDATE … WHERE id = (SELECT … LIMIT 1)
//! RETURNING`, with `FOR UPDATE SKIP LOCKED` on Postgres so several server processes share
//! the work without taking the same task. A task whose lease ran out (its worker died) is
//! due again. Workers sleep until new work is announced or the next task falls due.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::Row;
use tokio::sync::Semaphore;

use super::db::{now_ms, Backend};
use super::error::DbResultExt;
use super::jobs::{self, SCENE_AUDIO, SCENE_IMAGE};
use super::media;
use super::state::AppState;
use crate::error::AppError;

/// How long a claim lasts without a heartbeat.
pub const LEASE_MS: i64 = 30_000;
/// Tasks of one kind run at the same time, per server process.
pub const CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: i64,
    pub job_id: i64,
    pub kind: String,
    pub content_id: i64,
    pub scene_id: i64,
    pub attempt: i64,
    pub max_attempts: i64,
}

/// How a task failed: worth retrying (timeouts, 429, 5xx) or not (bad input, refusals).
#[derive(Debug, Clone)]
pub enum TaskError {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent(String),
}

impl TaskError {
    pub fn message(&self) -> &str {
        match self {
            TaskError::Transient { message, .. } | TaskError::Permanent(message) => message,
        }
    }
}

/// What a successful task made.
pub struct Output {
    pub asset_id: i64,
}

fn claim_sql(backend: Backend) -> String {
    let lock = if backend == Backend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    format!(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, locked_until = $1, worker_id = $2, updated_at = $3 \
         WHERE id = (SELECT id FROM tasks WHERE kind = $4 AND \
           ((status = 'queued' AND run_at <= $3) OR (status = 'running' AND locked_until < $3)) \
           ORDER BY run_at, id LIMIT 1{lock}) \
         RETURNING id, job_id, kind, content_id, scene_id, attempt, max_attempts"
    )
}

pub async fn claim(state: &AppState, kind: &str) -> Result<Option<ClaimedTask>, AppError> {
    let now = now_ms();
    let row = sqlx::query(&claim_sql(state.db.backend))
        .bind(now + LEASE_MS)
        .bind(&*state.worker_id)
        .bind(now)
        .bind(kind)
        .fetch_optional(state.pool())
        .await
        .db("claiming a task")?;
    let Some(row) = row else { return Ok(None) };
    let task = (|| -> Result<ClaimedTask, sqlx::Error> {
        Ok(ClaimedTask {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            kind: row.try_get("kind")?,
            content_id: row.try_get("content_id")?,
            scene_id: row.try_get("scene_id")?,
            attempt: row.try_get("attempt")?,
            max_attempts: row.try_get("max_attempts")?,
        })
    })()
    .db("decoding a task")?;
    jobs::refresh(state.pool(), task.job_id).await?;
    Ok(Some(task))
}

/// Runs a claimed task to its recorded outcome, extending the lease while it works.
#[tracing::instrument(name = "task.run", skip_all, fields(task_id = task.id, kind = %task.kind, attempt = task.attempt))]
pub async fn run_claimed(state: &AppState, task: ClaimedTask) -> Result<(), AppError> {
    if task.attempt > task.max_attempts {
        // A worker died on the last attempt: the lease ran out with no attempts left.
        return finish(
            state,
            &task,
            Err(TaskError::Permanent(
                "the worker stopped while running the last attempt".into(),
            )),
        )
        .await;
    }
    let heartbeat = {
        let state = state.clone();
        let id = task.id;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis((LEASE_MS / 3) as u64));
            every.tick().await;
            loop {
                every.tick().await;
                let _ = sqlx::query("UPDATE tasks SET locked_until = $1 WHERE id = $2 AND worker_id = $3 AND status = 'running'")
                    .bind(now_ms() + LEASE_MS)
                    .bind(id)
                    .bind(&*state.worker_id)
                    .execute(state.pool())
                    .await;
            }
        })
    };
    let result = match task.kind.as_str() {
        SCENE_IMAGE => media::scene_image(state, &task).await,
        SCENE_AUDIO => media::scene_audio(state, &task).await,
        other => Err(TaskError::Permanent(format!("unknown task kind {other:?}"))),
    };
    heartbeat.abort();
    finish(state, &task, result).await
}

/// Exponential backoff with ±20 % jitter, or the provider's Retry-After.
fn backoff(attempt: i64, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait;
    }
    let base = 1_000u64
        .saturating_mul(1 << attempt.clamp(0, 8))
        .min(300_000);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_millis((base as f64 * jitter) as u64)
}

async fn finish(
    state: &AppState,
    task: &ClaimedTask,
    result: Result<Output, TaskError>,
) -> Result<(), AppError> {
    let now = now_ms();
    // Every write below is guarded by "still ours and running": a worker whose lease was
    // taken over records nothing, so each scene gets exactly one current asset.
    let guard = "id = $2 AND worker_id = $3 AND status = 'running'";
    match result {
        Ok(output) => {
            // One write first (on SQLite a transaction that reads before it writes can fail
            // under concurrent writers): the task becomes succeeded, or cancelled when its
            // job was cancelled meanwhile.
            let mut tx = state.pool().begin().await.db("starting a transaction")?;
            let status: Option<String> = sqlx::query_scalar(&format!(
                "UPDATE tasks SET status = CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $5 AND status = 'cancelled') \
                 THEN 'cancelled' ELSE 'succeeded' END, output_asset_id = $1, locked_until = NULL, finished_at = $4, \
                 updated_at = $4 WHERE {guard} RETURNING status"
            ))
            .bind(output.asset_id)
            .bind(task.id)
            .bind(&*state.worker_id)
            .bind(now)
            .bind(task.job_id)
            .fetch_optional(&mut *tx)
            .await
            .db("completing a task")?;
            if status.as_deref() == Some("succeeded") {
                let column = if task.kind == SCENE_IMAGE {
                    "image_asset_id"
                } else {
                    "audio_asset_id"
                };
                sqlx::query(&format!(
                    "UPDATE scenes SET {column} = $1, updated_at = $2 WHERE id = $3"
                ))
                .bind(output.asset_id)
                .bind(now)
                .bind(task.scene_id)
                .execute(&mut *tx)
                .await
                .db("pointing a scene at its asset")?;
                tx.commit().await.db("committing a task")?;
            } else {
                tx.commit().await.db("committing a task")?;
                media::discard(state, output.asset_id).await;
            }
        }
        Err(error) => {
            let retry =
                matches!(error, TaskError::Transient { .. }) && task.attempt < task.max_attempts;
            let message = error.message().to_owned();
            if retry {
                let wait = match &error {
                    TaskError::Transient { retry_after, .. } => backoff(task.attempt, *retry_after),
                    TaskError::Permanent(_) => Duration::ZERO,
                };
                tracing::warn!(error = %message, wait_ms = wait.as_millis() as u64, "task failed; retrying");
                sqlx::query(&format!(
                    "UPDATE tasks SET status = 'queued', run_at = $1, last_error = $4, locked_until = NULL, worker_id = NULL, updated_at = $5 WHERE {guard}"
                ))
                .bind(now + wait.as_millis() as i64)
                .bind(task.id)
                .bind(&*state.worker_id)
                .bind(&message)
                .bind(now)
                .execute(state.pool())
                .await
                .db("rescheduling a task")?;
            } else {
                tracing::warn!(error = %message, "task failed");
                sqlx::query(&format!(
                    "UPDATE tasks SET status = 'failed', last_error = $1, locked_until = NULL, finished_at = $4, updated_at = $4 WHERE {guard}"
                ))
                .bind(&message)
                .bind(task.id)
                .bind(&*state.worker_id)
                .bind(now)
                .execute(state.pool())
                .await
                .db("failing a task")?;
            }
        }
    }
    jobs::refresh(state.pool(), task.job_id).await?;
    state.work.notify_waiters();
    Ok(())
}

/// Runs every due task of every kind in the caller's task, until none is left: for tests
/// and tools that want the queue drained now, not polled.
pub async fn drain(state: &AppState) -> Result<usize, AppError> {
    let mut ran = 0;
    loop {
        let mut any = false;
        for kind in [SCENE_IMAGE, SCENE_AUDIO] {
            while let Some(task) = claim(state, kind).await? {
                run_claimed(state, task).await?;
                ran += 1;
                any = true;
            }
        }
        if !any {
            return Ok(ran);
        }
    }
}

/// When the next task of `kind` falls due (a queued run_at or an expiring lease).
async fn next_due(state: &AppState, kind: &str) -> Option<i64> {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MIN(CASE WHEN status = 'queued' THEN run_at ELSE locked_until END) FROM tasks \
         WHERE kind = $1 AND status IN ('queued', 'running')",
    )
    .bind(kind)
    .fetch_one(state.pool())
    .await
    .ok()
    .flatten()
}

/// Starts the embedded workers: one loop per task kind, each running up to
/// `CONCURRENCY` tasks at once.
pub fn spawn_workers(state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    [SCENE_IMAGE, SCENE_AUDIO]
        .into_iter()
        .map(|kind| {
            let state = state.clone();
            tokio::spawn(async move { worker_loop(state, kind).await })
        })
        .collect()
}

async fn worker_loop(state: AppState, kind: &'static str) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Listen before looking, so an announcement between the look and the wait is kept.
        let announced = state.work.notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        match claim(&state, kind).await {
            Ok(Some(task)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = run_claimed(&state, task).await {
                        tracing::error!(error = %e.message, "recording a task's outcome failed");
                    }
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                let wait = match next_due(&state, kind).await {
                    Some(due) => Duration::from_millis((due - now_ms()).clamp(10, 60_000) as u64),
                    None => Duration::from_secs(60),
                };
                tokio::select! {
                    _ = &mut announced => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e.message, "claiming tasks failed; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
