//! The embedded transport: workers inside the server process claim due tasks from the
//! database with a lease, run them, and record the outcome. The same `run_claimed` is what
//! an HTTP worker route (QStash) calls, so both transports run the same task code.
//!
//! A claim is one transaction: on Postgres a per-kind advisory lock first, then one
//! `UPDATE … WHERE id = (SELECT … LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING` whose
//! conditions also hold the admin's limits, the job marked started, and (with a per-minute
//! limit) the start recorded. A task whose lease ran out (its worker died) is due again.
//! Workers sleep until new work is announced or the next task falls due.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::Row;
use tokio::sync::{Notify, Semaphore};

use super::db::{now_ms, Backend};
use super::error::DbResultExt;
use super::jobs::{self, RENDER, SCENE_AUDIO, SCENE_FOOTAGE, SCENE_IMAGE, WEBHOOK_DELIVERY};
use super::media;
use super::metrics::TaskOutcome;
use super::state::AppState;
use crate::error::AppError;
use crate::model::SettingsValues;

/// Most tasks of one kind a process runs at once; the admin's limit (enforced across every
/// process, in the claim) is usually lower.
pub const PROCESS_SLOTS: usize = 32;
/// How often a worker whose kind is at its concurrency limit looks again, in case a
/// process it cannot hear from freed a slot (a local finish wakes it at once).
const FULL_RECHECK: Duration = Duration::from_millis(500);

/// The admin's limits for one task kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindLimits {
    pub concurrency: i64,
    /// Starts per rate window; 0 for none.
    pub per_window: i64,
}

impl KindLimits {
    pub fn of(settings: &SettingsValues, kind: &str) -> Self {
        let (concurrency, per_window) = match kind {
            SCENE_IMAGE => (settings.image_concurrency, settings.image_per_minute),
            SCENE_AUDIO => (settings.tts_concurrency, settings.tts_per_minute),
            // Each finds footage and converts it as a creator's pick is: two at a time, as
            // clips convert, and Pexels' and Pixabay's own limits answer 429 when reached.
            SCENE_FOOTAGE => (2, 0),
            // A delivery waits on the receiver only; a slow one should not hold the rest.
            WEBHOOK_DELIVERY => (8, 0),
            // ffmpeg uses every core it is given: renders run one or two at a time.
            _ => (settings.render_concurrency, 0),
        };
        Self {
            concurrency: i64::from(concurrency.max(1)),
            per_window: i64::from(per_window),
        }
    }
}

async fn kind_limits(state: &AppState, kind: &str) -> Result<KindLimits, AppError> {
    Ok(KindLimits::of(
        &super::settings::for_tasks(state).await?.0,
        kind,
    ))
}

/// The rate window, with a margin: a provider counts a request when it arrives, a moment
/// after we admit it, so admissions keep a little further apart than the provider's minute.
fn rate_window_ms(state: &AppState) -> i64 {
    let window = state.limits.window().as_millis() as i64;
    window + window / 30
}

#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: i64,
    pub job_id: i64,
    pub kind: String,
    /// None for a task about no content (a webhook delivery).
    pub content_id: Option<i64>,
    /// None for a task about the whole content (a render).
    pub scene_id: Option<i64>,
    pub attempt: i64,
    pub max_attempts: i64,
    /// When this process claimed it, for the task's duration in the metrics.
    pub claimed_at: std::time::Instant,
}

impl ClaimedTask {
    /// The content a scene's or a render's task works on.
    pub fn content(&self) -> Result<i64, TaskError> {
        self.content_id
            .ok_or_else(|| TaskError::Permanent(format!("task {} names no content", self.id)))
    }

    /// From a claim's `RETURNING id, job_id, kind, content_id, scene_id, attempt, max_attempts`.
    pub fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, AppError> {
        (|| -> Result<Self, sqlx::Error> {
            Ok(Self {
                id: row.try_get("id")?,
                job_id: row.try_get("job_id")?,
                kind: row.try_get("kind")?,
                content_id: row.try_get("content_id")?,
                scene_id: row.try_get("scene_id")?,
                attempt: row.try_get("attempt")?,
                max_attempts: row.try_get("max_attempts")?,
                claimed_at: std::time::Instant::now(),
            })
        })()
        .db("decoding a task")
    }
}

/// How a task failed: worth retrying (timeouts, 429, 5xx) or not (bad input, refusals).
#[derive(Debug, Clone)]
pub enum TaskError {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent(String),
    /// A fault of the server itself (database, disk, a tool): the creator reads `message`;
    /// `detail` (a tool's stderr, paths, the database's words) is for admins, on the status
    /// page and in the log.
    Server {
        message: String,
        detail: String,
        transient: bool,
    },
    /// Stopped at a checkpoint: the job was cancelled (or the lease was lost).
    Cancelled,
}

impl TaskError {
    /// What the creator is shown.
    pub fn message(&self) -> &str {
        match self {
            TaskError::Transient { message, .. }
            | TaskError::Permanent(message)
            | TaskError::Server { message, .. } => message,
            TaskError::Cancelled => "cancelled",
        }
    }

    /// What only admins are shown, if anything.
    pub fn detail(&self) -> Option<&str> {
        match self {
            TaskError::Server { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// Worth another attempt.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TaskError::Transient { .. }
                | TaskError::Server {
                    transient: true,
                    ..
                }
        )
    }
}

/// What a successful task made: its main asset (the task's output), any others, and for a
/// render, which scene assets the video was made from. A task that recorded its result
/// itself (stock footage, put on the scene as a creator's pick is) has no primary, only
/// the asset it recorded.
pub struct Output {
    pub primary: Option<NewAsset>,
    pub also: Vec<NewAsset>,
    pub video_sources: Option<String>,
    /// The task's output when it recorded it itself.
    pub recorded: Option<i64>,
}

impl Output {
    pub fn one(asset: NewAsset) -> Self {
        Self {
            primary: Some(asset),
            also: Vec::new(),
            video_sources: None,
            recorded: None,
        }
    }

    /// Nothing left for the engine to record: the task put `asset` in place itself.
    pub fn recorded(asset: Option<i64>) -> Self {
        Self {
            primary: None,
            also: Vec::new(),
            video_sources: None,
            recorded: asset,
        }
    }

    fn assets(&self) -> impl Iterator<Item = &NewAsset> {
        self.primary.iter().chain(&self.also)
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.assets().map(|a| a.storage_key.as_str())
    }
}

/// A file a task made, as the asset row it becomes.
pub struct NewAsset {
    /// `image`, `audio`, `video` or `subtitles`: also says what it becomes current for.
    pub kind: &'static str,
    /// Where the file is, under the media directory.
    pub storage_key: String,
    pub mime_type: String,
    pub bytes: i64,
    pub duration_ms: Option<i64>,
    pub size: Option<(u32, u32)>,
    pub provider: String,
    /// Where each word of a narration falls in it (JSON of `espeak::WordTime`s).
    pub words: Option<String>,
}

fn claim_sql(backend: Backend) -> String {
    let lock = if backend == Backend::Postgres {
        " FOR UPDATE OF t SKIP LOCKED"
    } else {
        ""
    };
    let due = |t: &str, j: &str| {
        format!(
            "{t}.kind = $4 AND (({t}.status = 'queued' AND {t}.run_at <= $3) OR ({t}.status = 'running' AND {t}.locked_until < $3)) \
             AND {j}.status <> 'cancelled'"
        )
    };
    // Fair across owners: the next task belongs to the owner with due work and the fewest
    // tasks of the kind running (the longest-waiting owner first among equals), then is
    // that owner's oldest. One creator's batch of thousands no longer holds everyone
    // else's work behind it. The owner is picked from a grouped list, so the cost is one
    // pass over the due tasks, not a count per task.
    // The limits are part of the same statement, so on SQLite (one writer at a time) the
    // check and the claim cannot be split by another claim; Postgres serialises claims of a
    // kind with an advisory lock first.
    let claim = format!(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, locked_until = $1, worker_id = $2, updated_at = $3, \
         started_at = COALESCE(started_at, $3) \
         WHERE id = (SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE {due_t} \
           AND COALESCE(j.owner_id, 0) = (SELECT o.owner FROM \
             (SELECT COALESCE(oj.owner_id, 0) AS owner, MIN(ot.run_at) AS first_due FROM tasks ot \
              JOIN jobs oj ON oj.id = ot.job_id WHERE {due_o} GROUP BY COALESCE(oj.owner_id, 0)) o \
             ORDER BY (SELECT COUNT(*) FROM tasks r JOIN jobs rj ON rj.id = r.job_id WHERE r.kind = $4 \
               AND r.status = 'running' AND r.locked_until >= $3 AND COALESCE(rj.owner_id, 0) = o.owner), \
             o.first_due, o.owner LIMIT 1) \
           ORDER BY t.run_at, t.id LIMIT 1{lock}) \
         AND (SELECT COUNT(*) FROM tasks WHERE kind = $4 AND status = 'running' AND locked_until >= $3) < $5 \
         AND ($6 = 0 OR (SELECT COUNT(*) FROM task_starts WHERE kind = $4 AND started_at > $7) < $6) \
         RETURNING id, job_id, kind, content_id, scene_id, attempt, max_attempts",
        due_t = due("t", "j"),
        due_o = due("ot", "oj"),
    );
    if backend != Backend::Postgres {
        return claim;
    }
    // On Postgres the job is marked started and the start counted for the rate limit in
    // the same statement (one round trip, not four). SQLite cannot modify data in a WITH.
    format!(
        "WITH claimed AS ({claim}), \
         started AS (UPDATE jobs SET {started} \
           FROM claimed WHERE jobs.id = claimed.job_id AND jobs.status = 'queued'), \
         counted AS (INSERT INTO task_starts (kind, started_at) SELECT kind, $3 FROM claimed WHERE $6 > 0), \
         pruned AS (DELETE FROM task_starts WHERE kind = $4 AND started_at < $8 AND $6 > 0 AND EXISTS (SELECT 1 FROM claimed)) \
         SELECT * FROM claimed",
        started = jobs::started_set("$3"),
    )
}

/// Claims the next due task of `kind` if the kind's limits leave room.
pub async fn claim(
    state: &AppState,
    kind: &str,
    limits: KindLimits,
) -> Result<Option<ClaimedTask>, AppError> {
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    if state.db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('crevid.claim.' || $1))")
            .bind(kind)
            .execute(&mut *tx)
            .await
            .db("locking the queue")?;
    }
    let sql = claim_sql(state.db.backend);
    let mut query = sqlx::query(&sql)
        .bind(now + state.timing.lease_ms)
        .bind(&*state.worker_id)
        .bind(now)
        .bind(kind)
        .bind(limits.concurrency)
        .bind(limits.per_window)
        .bind(now - rate_window_ms(state));
    let postgres = state.db.backend == Backend::Postgres;
    if postgres {
        query = query.bind(now - 2 * rate_window_ms(state));
    }
    let row = query.fetch_optional(&mut *tx).await.db("claiming a task")?;
    let Some(row) = row else {
        tx.commit().await.db("claiming a task")?;
        return Ok(None);
    };
    if postgres {
        tx.commit().await.db("claiming a task")?;
        return Ok(Some(ClaimedTask::from_row(&row)?));
    }
    let job_id: i64 = row.try_get("job_id").db("decoding a task")?;
    jobs::mark_started(&mut tx, job_id).await?;
    if limits.per_window > 0 {
        sqlx::query("INSERT INTO task_starts (kind, started_at) VALUES ($1, $2)")
            .bind(kind)
            .bind(now)
            .execute(&mut *tx)
            .await
            .db("recording a start")?;
        sqlx::query("DELETE FROM task_starts WHERE kind = $1 AND started_at < $2")
            .bind(kind)
            .bind(now - 2 * rate_window_ms(state))
            .execute(&mut *tx)
            .await
            .db("pruning starts")?;
    }
    tx.commit().await.db("claiming a task")?;
    Ok(Some(ClaimedTask::from_row(&row)?))
}

/// One signal per task kind: a new task of the kind, or a slot of it come free. A worker
/// loop waits on its own kind's only, so finishing narration does not wake the image loop.
#[derive(Debug, Default)]
pub struct Signals {
    image: Notify,
    audio: Notify,
    footage: Notify,
    render: Notify,
    webhook: Notify,
}

impl Signals {
    fn of(&self, kind: &str) -> &Notify {
        match kind {
            SCENE_IMAGE => &self.image,
            SCENE_AUDIO => &self.audio,
            SCENE_FOOTAGE => &self.footage,
            WEBHOOK_DELIVERY => &self.webhook,
            _ => &self.render,
        }
    }

    /// Wakes the workers of `kind`, or of every kind; and whoever waits on `state.work`.
    fn raise(state: &AppState, kind: Option<&str>) {
        match kind {
            Some(kind) => state.signals.of(kind).notify_waiters(),
            None => KINDS
                .iter()
                .for_each(|k| state.signals.of(k).notify_waiters()),
        }
        state.work.notify_waiters();
    }
}

/// What other processes hear: the kind (empty for any) and who said it, so a process
/// does not wake itself a second time.
fn payload(state: &AppState, kind: Option<&str>) -> String {
    format!("{} {}", kind.unwrap_or_default(), state.worker_id)
}

/// Tells the other processes (on Postgres, once `tx` commits) that `kind` has new work;
/// `wake` tells this one after the commit.
pub async fn announce(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
) -> Result<(), AppError> {
    if state.db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(state, Some(kind)))
            .execute(&mut **tx)
            .await
            .db("announcing work")?;
    }
    Ok(())
}

/// Work of `kind` (or of any kind) became due, or a slot came free: wakes this process's
/// workers at once and, on Postgres, the other processes'.
pub async fn wake(state: &AppState, kind: Option<&str>) {
    Signals::raise(state, kind);
    if state.db.backend == Backend::Postgres {
        let _ = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(state, kind))
            .execute(state.pool())
            .await;
    }
}

/// This process's workers, after the announcing transaction committed.
pub fn wake_here(state: &AppState, kind: &str) {
    Signals::raise(state, Some(kind));
}

const CHANNEL: &str = "crevid_work";

/// Runs a claimed task to its recorded outcome, extending the lease while it works.
#[tracing::instrument(name = "task.run", skip_all, fields(task_id = task.id, kind = %task.kind, attempt = task.attempt))]
pub async fn run_claimed(state: &AppState, task: ClaimedTask) -> Result<(), AppError> {
    run_claimed_within(state, task, None).await
}

/// `run_claimed`, giving up with a permanent error after `limit` (a QStash delivery must
/// answer before QStash's timeout; the work is stopped, not left running unanswered).
pub async fn run_claimed_within(
    state: &AppState,
    task: ClaimedTask,
    limit: Option<Duration>,
) -> Result<(), AppError> {
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
    // The heartbeat extends the lease and is the running task's checkpoint: it ends when
    // the job was cancelled or the lease was taken over, and the work is dropped with it
    // (child processes are killed on drop, requests aborted).
    let heartbeat = async {
        let mut every =
            tokio::time::interval(Duration::from_millis((state.timing.lease_ms / 3) as u64));
        every.tick().await;
        loop {
            every.tick().await;
            let job_status: Result<Option<String>, _> = sqlx::query_scalar(
                "UPDATE tasks SET locked_until = $1 WHERE id = $2 AND worker_id = $3 AND attempt = $4 AND status = 'running' \
                 RETURNING (SELECT status FROM jobs WHERE jobs.id = tasks.job_id)",
            )
            .bind(now_ms() + state.timing.lease_ms)
            .bind(task.id)
            .bind(&*state.worker_id)
            .bind(task.attempt)
            .fetch_optional(state.pool())
            .await;
            match job_status {
                Ok(Some(status)) if status != "cancelled" => {}
                Ok(_) => return,
                // A failed heartbeat is retried; the lease has room for two more.
                Err(e) => tracing::warn!(error = %e, "extending a lease failed"),
            }
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let work = async {
        let run = async {
            match task.kind.as_str() {
                SCENE_IMAGE => media::scene_image(state, &task).await,
                SCENE_AUDIO => media::scene_audio(state, &task).await,
                SCENE_FOOTAGE => super::stock::scene_footage(state, &task).await,
                RENDER => super::render::render(state, &task, stopped).await,
                WEBHOOK_DELIVERY => super::webhooks::deliver(state, &task).await,
                other => Err(TaskError::Permanent(format!("unknown task kind {other:?}"))),
            }
        };
        // A panic in a task (a bug, here or in a library) is the server's fault like any
        // other: recorded and retried, never a task left "running" by a dead future.
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run))
            .await
            .unwrap_or_else(|panic| {
                let detail = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                Err(media::server_fault(
                    "the server failed while running this step; it will be tried again",
                    format!("panicked: {detail}"),
                    true,
                ))
            })
    };
    tokio::pin!(work);
    let deadline = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    // A server asked to stop lets the task run for the grace period, then puts it back.
    // Under QStash the delivery is then answered "try again" (the task is queued), so
    // QStash redelivers it to a process that is running rather than the server outliving
    // its supervisor's patience.
    let released = async {
        state.shutting_down().await;
        tokio::time::sleep(state.timing.shutdown_grace).await;
    };
    let first = tokio::select! {
        result = &mut work => Some(Ok(result)),
        () = heartbeat => None,
        () = deadline => Some(Err(limit.unwrap_or_default())),
        () = released => {
            let _ = stop.send(true);
            if task.kind == RENDER {
                let _ = tokio::time::timeout(Duration::from_secs(30), &mut work).await;
            }
            return release(state, &task).await;
        }
    };
    let result = match first {
        Some(Ok(result)) => result,
        Some(Err(limit)) => {
            let _ = stop.send(true);
            if task.kind == RENDER {
                let _ = tokio::time::timeout(Duration::from_secs(30), &mut work).await;
            }
            Err(TaskError::Permanent(format!(
                "stopped after {} s, the most a QStash delivery may take (CREVID_QSTASH_TIMEOUT_SECS)",
                limit.as_secs()
            )))
        }
        None => {
            if task.kind == RENDER {
                // A render is told to stop, so it kills ffmpeg and waits for it to be gone
                // before the task is recorded as cancelled. Other work is simply dropped.
                let _ = stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(30), &mut work).await;
            }
            Err(TaskError::Cancelled)
        }
    };
    finish(state, &task, result).await
}

/// Puts a task this worker holds back in the queue, due now and without spending its
/// attempt: the server stopped it, the task did nothing wrong. Any other worker (or this
/// server restarted) takes it up at once.
async fn release(state: &AppState, task: &ClaimedTask) -> Result<(), AppError> {
    let now = now_ms();
    let released = sqlx::query(
        "UPDATE tasks SET status = 'queued', attempt = attempt - 1, locked_until = NULL, worker_id = NULL, \
         run_at = $1, updated_at = $1 \
         WHERE id = $2 AND worker_id = $3 AND attempt = $4 AND status = 'running'",
    )
    .bind(now)
    .bind(task.id)
    .bind(&*state.worker_id)
    .bind(task.attempt)
    .execute(state.pool())
    .await
    .db("releasing a task")?
    .rows_affected();
    tracing::info!(
        task_id = task.id,
        released = released == 1,
        "stopping: the task goes back to the queue without spending an attempt"
    );
    // Other processes on the database may take it now.
    wake(state, Some(&task.kind)).await;
    Ok(())
}

/// Exponential backoff with ±20 % jitter, or the provider's Retry-After.
fn backoff(base_ms: u64, attempt: i64, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        // A provider asking for hours is not waited for: the task retries in 10 minutes.
        return wait.min(Duration::from_secs(600));
    }
    let base = base_ms
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
    // taken over records nothing, so each scene gets exactly one current asset. The
    // outcome, the scene's new asset and the job's counts commit together; the task row
    // is written first (on SQLite a transaction that reads before it writes can fail under
    // concurrent writers).
    // The attempt fences off an earlier run of the same task in this process (same worker
    // id) whose lease ran out and was claimed again.
    let guard = format!(
        "id = $2 AND worker_id = $3 AND attempt = {} AND status = 'running'",
        task.attempt
    );
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let mut discard = None;
    let mut superseded = Vec::new();
    let mut succeeded = false;
    let mut render_expected = false;
    // What the metrics count of this run (another worker holding the task now returns
    // before anything is counted).
    let counted;
    let mut video_ms = None;
    match result {
        Ok(output) => {
            video_ms = output.primary.as_ref().and_then(|p| p.duration_ms);
            let mut ids = Vec::new();
            for asset in output.assets() {
                ids.push(insert_asset(&mut tx, task, asset, now).await?);
            }
            // Succeeded, or cancelled when the job was cancelled meanwhile. Whether a render
            // is expected comes along (the content has a video to bring up to date, or a
            // render or this job will make one), so that segments are prepared ahead only
            // then; a render encodes whatever was not prepared.
            let outcome: Option<(String, i64)> = sqlx::query_as(&format!(
                "UPDATE tasks SET status = CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $5 AND status = 'cancelled') \
                 THEN 'cancelled' ELSE 'succeeded' END, output_asset_id = $1, locked_until = NULL, finished_at = $4, \
                 updated_at = $4 WHERE {guard} RETURNING status, CAST(CASE WHEN \
                 (EXISTS (SELECT 1 FROM contents c WHERE c.id = tasks.content_id AND c.video_asset_id IS NOT NULL) \
                  OR EXISTS (SELECT 1 FROM jobs r WHERE r.content_id = tasks.content_id AND r.kind = 'render' \
                    AND r.status IN ('queued', 'processing')) \
                  OR EXISTS (SELECT 1 FROM jobs o WHERE o.id = tasks.job_id AND o.options LIKE '%\"render_after\":true%')) \
                 THEN 1 ELSE 0 END AS BIGINT)"
            ))
            .bind(output.primary.as_ref().and(ids.first().copied()).or(output.recorded))
            .bind(task.id)
            .bind(&*state.worker_id)
            .bind(now)
            .bind(task.job_id)
            .fetch_optional(&mut *tx)
            .await
            .db("completing a task")?;
            match outcome.as_ref().map(|(status, _)| status.as_str()) {
                Some("succeeded") => {
                    succeeded = true;
                    counted = Some(TaskOutcome::Succeeded);
                    render_expected = outcome.as_ref().is_some_and(|(_, r)| *r == 1);
                    for (asset, id) in output.assets().zip(&ids) {
                        make_current(&mut tx, task, asset.kind, *id, &output, now).await?;
                    }
                    // What the new assets replace is dropped with them.
                    if let Some(content_id) = task.content_id {
                        superseded = media::drop_unowned(&mut tx, content_id).await?;
                    }
                }
                Some(_) => {
                    counted = Some(TaskOutcome::Cancelled);
                    sqlx::query("UPDATE tasks SET output_asset_id = NULL WHERE id = $1")
                        .bind(task.id)
                        .execute(&mut *tx)
                        .await
                        .db("completing a task")?;
                    for id in &ids {
                        sqlx::query("DELETE FROM assets WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .db("dropping an asset")?;
                    }
                    discard = Some(output);
                }
                None => {
                    // Another worker holds the task now: keep nothing of this run.
                    drop(tx);
                    for key in output.keys() {
                        state.storage.remove(key).await;
                    }
                    return Ok(());
                }
            }
        }
        Err(TaskError::Cancelled) => {
            counted = Some(TaskOutcome::Cancelled);
            sqlx::query(&format!(
                "UPDATE tasks SET status = 'cancelled', locked_until = NULL, finished_at = $1, updated_at = $1 WHERE {guard}"
            ))
            .bind(now)
            .bind(task.id)
            .bind(&*state.worker_id)
            .execute(&mut *tx)
            .await
            .db("cancelling a task")?;
        }
        Err(error) => {
            let retry = error.is_transient() && task.attempt < task.max_attempts;
            let message = error.message().to_owned();
            let detail = error.detail().map(str::to_owned);
            counted = Some(if retry {
                TaskOutcome::Retried
            } else {
                TaskOutcome::Failed
            });
            if retry {
                let wait = match &error {
                    TaskError::Transient { retry_after, .. } => {
                        backoff(state.timing.retry_base_ms, task.attempt, *retry_after)
                    }
                    _ => Duration::ZERO,
                };
                tracing::warn!(error = %message, detail = detail.as_deref().unwrap_or_default(), wait_ms = wait.as_millis() as u64, "task failed; retrying");
                sqlx::query(&format!(
                    "UPDATE tasks SET status = CASE WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.id = tasks.job_id AND j.status = 'cancelled') \
                     THEN 'cancelled' ELSE 'queued' END, run_at = $1, last_error = $4, error_detail = $6, locked_until = NULL, \
                     worker_id = NULL, updated_at = $5 WHERE {guard}"
                ))
                .bind(now + wait.as_millis() as i64)
                .bind(task.id)
                .bind(&*state.worker_id)
                .bind(&message)
                .bind(now)
                .bind(&detail)
                .execute(&mut *tx)
                .await
                .db("rescheduling a task")?;
            } else {
                tracing::warn!(error = %message, detail = detail.as_deref().unwrap_or_default(), "task failed");
                sqlx::query(&format!(
                    "UPDATE tasks SET status = 'failed', last_error = $1, error_detail = $5, locked_until = NULL, finished_at = $4, \
                     updated_at = $4 WHERE {guard}"
                ))
                .bind(&message)
                .bind(task.id)
                .bind(&*state.worker_id)
                .bind(now)
                .bind(&detail)
                .execute(&mut *tx)
                .await
                .db("failing a task")?;
            }
        }
    }
    let job_status = jobs::refresh_in(state, &mut tx, task.job_id).await?;
    tx.commit().await.db("committing a task")?;
    if matches!(job_status, Some("completed" | "failed")) {
        super::webhooks::wake(state);
    }
    if let Some(outcome) = counted {
        let took = task.claimed_at.elapsed();
        state.metrics.task(&task.kind, outcome, took);
        if task.kind == RENDER && outcome == TaskOutcome::Succeeded {
            if let Some(ms) = video_ms.filter(|ms| *ms > 0) {
                state.metrics.render(Duration::from_millis(ms as u64), took);
            }
        }
    }
    if let Some(output) = discard {
        for key in output.keys() {
            state.storage.remove(key).await;
        }
    }
    for key in &superseded {
        state.storage.remove(key).await;
    }
    wake(state, Some(&task.kind)).await;
    if task.kind != RENDER {
        // The job may have just completed with "render when ready".
        if job_status == Some("completed") {
            if let Err(e) = jobs::render_when_ready(state, task.job_id).await {
                tracing::warn!(error = %e.message, "starting a render when ready failed");
            }
        }
        if let Some(content_id) = task.content_id.filter(|_| succeeded && render_expected) {
            super::render::prepare_ahead(state, content_id);
        }
    }
    Ok(())
}

async fn insert_asset(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task: &ClaimedTask,
    asset: &NewAsset,
    now: i64,
) -> Result<i64, AppError> {
    sqlx::query_scalar(
        "INSERT INTO assets (content_id, scene_id, kind, storage_key, mime_type, bytes, duration_ms, width, height, provider, words, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(task.content_id)
    .bind(task.scene_id)
    .bind(asset.kind)
    .bind(&asset.storage_key)
    .bind(&asset.mime_type)
    .bind(asset.bytes)
    .bind(asset.duration_ms)
    .bind(asset.size.map(|s| i64::from(s.0)))
    .bind(asset.size.map(|s| i64::from(s.1)))
    .bind(&asset.provider)
    .bind(&asset.words)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .db("recording an asset")
}

/// Points the scene (picture, narration) or the content (video, subtitles) at a new asset;
/// the previous one stays until this commits.
async fn make_current(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task: &ClaimedTask,
    kind: &str,
    asset_id: i64,
    output: &Output,
    now: i64,
) -> Result<(), AppError> {
    let (sql, owner) = match kind {
        "image" => {
            // A creator's own picture put on the scene after this task was queued stays:
            // the generated one is dropped with the other unowned media.
            sqlx::query(
                "UPDATE scenes SET image_asset_id = $1, clip_asset_id = NULL, updated_at = $2 WHERE id = $3 \
                 AND NOT EXISTS (SELECT 1 FROM assets a WHERE a.id = scenes.image_asset_id \
                   AND a.provider = 'upload' \
                   AND a.created_at > (SELECT t.created_at FROM tasks t WHERE t.id = $4))",
            )
            .bind(asset_id)
            .bind(now)
            .bind(task.scene_id)
            .bind(task.id)
            .execute(&mut **tx)
            .await
            .db("pointing a scene at its picture")?;
            return Ok(());
        }
        "audio" => (
            "UPDATE scenes SET audio_asset_id = $1, updated_at = $2 WHERE id = $3",
            task.scene_id,
        ),
        "subtitles" => (
            "UPDATE contents SET subtitles_asset_id = $1, updated_at = $2 WHERE id = $3",
            task.content_id,
        ),
        _ => {
            sqlx::query(
                "UPDATE contents SET video_asset_id = $1, video_sources = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(asset_id)
            .bind(output.video_sources.as_deref())
            .bind(now)
            .bind(task.content_id)
            .execute(&mut **tx)
            .await
            .db("pointing a content at its video")?;
            return Ok(());
        }
    };
    sqlx::query(sql)
        .bind(asset_id)
        .bind(now)
        .bind(owner)
        .execute(&mut **tx)
        .await
        .db("pointing at a new asset")?;
    Ok(())
}

/// Runs every due task of every kind in the caller's task, until none is left: for tests
/// and tools that want the queue drained now, not polled.
pub async fn drain(state: &AppState) -> Result<usize, AppError> {
    let mut ran = 0;
    loop {
        let mut any = false;
        for kind in KINDS {
            let limits = kind_limits(state, kind).await?;
            while let Some(task) = claim(state, kind, limits).await? {
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

/// Every task kind, for what is kept or shown per kind.
pub const KINDS: [&str; 5] = [
    SCENE_IMAGE,
    SCENE_AUDIO,
    SCENE_FOOTAGE,
    RENDER,
    WEBHOOK_DELIVERY,
];

/// How long a worker with nothing to claim may sleep: until the next task falls due (a
/// queued `run_at`, an expiring lease), or, when due work waits on the limits, until the
/// oldest start leaves the rate window or a slot may have come free.
async fn idle_wait(state: &AppState, kind: &str, limits: KindLimits) -> Duration {
    let now = now_ms();
    let due = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MIN(CASE WHEN status = 'queued' THEN run_at ELSE locked_until END) FROM tasks \
         WHERE kind = $1 AND status IN ('queued', 'running')",
    )
    .bind(kind)
    .fetch_one(state.pool())
    .await
    .ok()
    .flatten();
    let Some(due) = due else {
        return Duration::from_secs(60);
    };
    if due > now {
        return Duration::from_millis((due - now).clamp(10, 60_000) as u64);
    }
    let window = rate_window_ms(state);
    if limits.per_window > 0 {
        let starts: Vec<i64> = sqlx::query_scalar(
            "SELECT started_at FROM task_starts WHERE kind = $1 AND started_at > $2 ORDER BY started_at",
        )
        .bind(kind)
        .bind(now - window)
        .fetch_all(state.pool())
        .await
        .unwrap_or_default();
        if starts.len() as i64 >= limits.per_window {
            // Room again when enough of the oldest starts have left the window.
            let index = starts.len() - limits.per_window as usize;
            let free_at = starts[index] + window + 1;
            return Duration::from_millis((free_at - now).clamp(10, 60_000) as u64);
        }
    }
    FULL_RECHECK
}

/// Starts the embedded workers: one loop per task kind, and on Postgres a listener that
/// hears work announced by other processes.
pub fn spawn_workers(state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    if state.qstash.is_some() {
        // QStash delivers the tasks to the worker routes; this process only publishes.
        return vec![super::qstash::spawn_relay(state)];
    }
    let mut handles: Vec<_> = KINDS
        .into_iter()
        .map(|kind| {
            let state = state.clone();
            tokio::spawn(async move { worker_loop(state, kind).await })
        })
        .collect();
    if state.db.backend == Backend::Postgres {
        handles.push(tokio::spawn(listen(state)));
    }
    handles
}

/// Raises this process's wake-ups on other processes' announcements until the server
/// stops (a listener left running held every stop for the whole grace period and more).
async fn listen(state: AppState) {
    let stopping = state.clone();
    tokio::select! {
        () = stopping.shutting_down() => {}
        () = listen_forever(state) => {}
    }
}

async fn listen_forever(state: AppState) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&state.db.url).await?;
            listener.listen(CHANNEL).await?;
            // Anything announced while we were not listening is picked up by this wake.
            Signals::raise(&state, None);
            loop {
                let notification = listener.recv().await?;
                let (kind, from) = notification.payload().split_once(' ').unwrap_or_default();
                if from != &*state.worker_id {
                    Signals::raise(&state, Some(kind).filter(|k| KINDS.contains(k)));
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = listener.await {
            tracing::warn!(error = %e, "listening for work on Postgres failed; reconnecting in 5 s");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One task of the kind running in this process, until dropped.
struct Counted(Arc<std::sync::atomic::AtomicI64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn worker_loop(state: AppState, kind: &'static str) {
    let slots = Arc::new(Semaphore::new(PROCESS_SLOTS));
    // Tasks of the kind running in this process: at the kind's limit, a claim could only
    // find it full, so the loop waits for one of them to finish instead of asking.
    let running = Arc::new(std::sync::atomic::AtomicI64::new(0));
    loop {
        if state.is_shutting_down() {
            // No more claims; the tasks running here finish or are put back within the
            // grace period (`run_claimed_within`), each returning its slot.
            let _ = slots.acquire_many(PROCESS_SLOTS as u32).await;
            return;
        }
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = state.shutting_down() => continue,
        };
        // Listen before looking, so an announcement between the look and the wait is kept.
        let announced = state.signals.of(kind).notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        let current = match kind_limits(&state, kind).await {
            Ok(limits) => limits,
            Err(e) => {
                tracing::error!(error = %e.message, "reading limits failed; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if running.load(std::sync::atomic::Ordering::SeqCst) >= current.concurrency {
            drop(permit);
            tokio::select! {
                _ = &mut announced => {}
                _ = tokio::time::sleep(FULL_RECHECK) => {}
                () = state.shutting_down() => {}
            }
            continue;
        }
        match claim(&state, kind, current).await {
            Ok(Some(task)) => {
                let state = state.clone();
                let running = running.clone();
                running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Counted down even if the task's future dies: a count left up would hold
                // the kind at its limit in this process for good.
                let counted = Counted(running);
                tokio::spawn(async move {
                    if let Err(e) = run_claimed(&state, task).await {
                        tracing::error!(error = %e.message, "recording a task's outcome failed");
                    }
                    drop(counted);
                    drop(permit);
                    // The outcome's own wake came before the count went down.
                    wake_here(&state, kind);
                });
            }
            Ok(None) => {
                drop(permit);
                let wait = idle_wait(&state, kind, current).await;
                tokio::select! {
                    _ = &mut announced => {}
                    _ = tokio::time::sleep(wait) => {}
                    () = state.shutting_down() => {}
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
