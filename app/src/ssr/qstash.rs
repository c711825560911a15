//! The QStash transport (DESIGN.md, "Transports"). The task rows stay the truth; an
//! outbox row committed with each queued task is published by a relay to
//! `{QSTASH_URL}/v2/batch`, and QStash calls `/api/workers/{route}` with a signed request
//! that claims the task idempotently and runs it within the request. The answer tells
//! QStash what to do next: 2xx done (or nothing to do), 5xx with `Retry-After` try again,
//! 489 with `Upstash-NonRetryable-Error` give up. When QStash gives up it calls
//! `/api/workers/failed`, which records the failure on the task.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::db::{now_ms, Backend};
use super::engine::{self, ClaimedTask, KindLimits};
use super::error::DbResultExt;
use super::jobs::{RENDER, SCENE_AUDIO};
use super::state::AppState;
use crate::error::AppError;

/// Where QStash and the workers meet, from the environment (`QSTASH_*`).
#[derive(Clone)]
pub struct QStashConfig {
    /// `QSTASH_URL`, without a trailing slash.
    pub url: String,
    pub token: SecretString,
    pub current_key: SecretString,
    pub next_key: Option<SecretString>,
    /// Deliveries after the first (`Upstash-Retries`).
    pub retries: u32,
    /// How long QStash waits for a worker's answer (`Upstash-Timeout`).
    pub timeout: Duration,
    /// Clock difference allowed on a signature's `exp` and `nbf`.
    pub tolerance: Duration,
}

impl QStashConfig {
    pub fn new(
        url: &str,
        token: String,
        current_key: String,
        next_key: Option<String>,
        (retries, timeout, tolerance): (u32, Duration, Duration),
    ) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token: token.into(),
            current_key: current_key.into(),
            next_key: next_key.map(Into::into),
            retries,
            timeout,
            tolerance,
        }
    }
}

/// The transport's state in this process.
pub struct QStash {
    pub config: QStashConfig,
    /// The public base URL QStash calls the worker routes at (`CREVID_PUBLIC_URL`).
    pub base: String,
    relay: tokio::sync::Notify,
    status: Mutex<Seen>,
    /// This installation's id (`install_id`), read once from the database.
    install: std::sync::OnceLock<String>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    last_delivery_ms: Option<i64>,
    last_publish_ms: Option<i64>,
}

/// The transport's health, for the status page.
#[derive(Debug, Clone, Serialize)]
pub struct TransportStatus {
    pub outbox_depth: i64,
    pub last_publish_error: Option<String>,
    pub last_publish_ms: Option<i64>,
    pub last_delivery_ms: Option<i64>,
    /// Queued tasks whose message QStash accepted but from which no delivery reached a
    /// worker within the lease (`undelivered_since`).
    pub stuck_tasks: i64,
    /// How long the oldest of them has waited for a delivery, in milliseconds.
    pub oldest_stuck_ms: Option<i64>,
}

impl QStash {
    pub fn new(config: QStashConfig, base: &str) -> Self {
        Self {
            config,
            base: base.trim_end_matches('/').to_owned(),
            relay: tokio::sync::Notify::new(),
            status: Mutex::new(Seen::default()),
            install: std::sync::OnceLock::new(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn worker_url(&self, route: &str) -> String {
        format!("{}/api/workers/{route}", self.base)
    }
}

// ---------------------------------------------------------------------------------------
// Installation id

/// The `settings` key of this installation's id.
const INSTALL_KEY: &str = "install.id";

/// This installation's id: 16 random hex digits made the first time any process of it
/// publishes, and kept in the database. QStash deduplicates and flow-controls per account,
/// so every id CREVID gives QStash carries it: a second install (or a reset database) on
/// the same account numbers its outbox rows from 1 again, and without it QStash would
/// drop those messages as duplicates of the first install's.
pub async fn install_id(state: &AppState) -> Result<String, AppError> {
    if let Some(id) = state.qstash.as_ref().and_then(|q| q.install.get()) {
        return Ok(id.clone());
    }
    let fresh: [u8; 8] = rand::random();
    let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    // Two processes starting together: the first insert wins and both read it back.
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
    )
    .bind(INSTALL_KEY)
    .bind(&fresh)
    .bind(now_ms())
    .execute(state.pool())
    .await
    .db("recording this installation's id")?;
    let id: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(INSTALL_KEY)
        .fetch_one(state.pool())
        .await
        .db("reading this installation's id")?;
    if let Some(q) = &state.qstash {
        let _ = q.install.set(id.clone());
    }
    Ok(id)
}

/// `Upstash-Deduplication-Id` of an outbox row: one message per row and installation, so
/// a relay that publishes a row twice (it died before recording the answer) is
/// deduplicated, and another installation's rows never are.
pub fn deduplication_id(install: &str, task_id: i64, outbox_id: i64) -> String {
    format!("crevid-{install}-task-{task_id}-{outbox_id}")
}

/// `Upstash-Flow-Control-Key` of a task kind: this installation's limits hold its own
/// deliveries only (the latest publish under a key sets the key's limits).
pub fn flow_control_key(install: &str, kind: &str) -> String {
    format!("crevid-{install}-{kind}")
}

/// The seeds' worker route names.
pub const MEDIA_ROUTE: &str = "media-generation";
pub const TTS_ROUTE: &str = "tts-generation";
pub const BATCH_ROUTE: &str = "batch-operation";
pub const RENDER_ROUTE: &str = "render";
pub const FAILED_ROUTE: &str = "failed";

/// The route a task is delivered to: tasks of a job over several contents go to the
/// batch route, the others to their kind's.
fn route_of(kind: &str, batch: bool) -> &'static str {
    match (kind, batch) {
        (RENDER, _) => RENDER_ROUTE,
        (_, true) => BATCH_ROUTE,
        (SCENE_AUDIO, false) => TTS_ROUTE,
        _ => MEDIA_ROUTE,
    }
}

/// What a delivery carries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub task_id: i64,
}

// ---------------------------------------------------------------------------------------
// Outbox and relay

/// Records an outbox row for each of `task_ids`, just queued, in the caller's
/// transaction: the tasks and their publication commit together.
pub async fn enqueue_tasks(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task_ids: &[i64],
) -> Result<(), AppError> {
    if state.qstash.is_none() {
        return Ok(());
    }
    let now = now_ms();
    for id in task_ids {
        sqlx::query(
            "INSERT INTO outbox (task_id, created_at, next_attempt_at) VALUES ($1, $2, $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .db("recording a task to publish")?;
    }
    Ok(())
}

/// Messages QStash accepts for a task from which no delivery reaches a worker before the
/// task is failed. Each waits its lease and QStash's own retries; then QStash is asked
/// whether it still holds it, and only a message it no longer holds counts.
pub const UNDELIVERED_MESSAGES: i64 = 3;

/// SQL over `tasks t`: a queued task that fell due (`run_at`), and that no delivery has
/// claimed or answered (`updated_at`), at least a lease before `cut` (milliseconds).
fn undelivered_since(cut: &str) -> String {
    format!(
        "t.status = 'queued' AND t.run_at < {cut} AND t.updated_at < {cut} \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id AND j.status = 'cancelled')"
    )
}

/// A task whose latest message QStash accepted but that no delivery will finish.
struct Stalled {
    task_id: i64,
    status: String,
    updated_at: i64,
    outbox_id: i64,
    message_id: Option<String>,
    /// Messages published since a delivery last claimed or answered the task.
    untouched: i64,
}

/// Publishes again the tasks that wait on a delivery QStash will not make:
/// - a task whose worker died (running, its lease ran out, no message published since):
///   the delivery that held it was answered or given up on;
/// - a queued task no delivery reached within its lease after it fell due: every delivery
///   and the failure callback were refused (a wrong signing key, a skewed clock), or QStash
///   dropped the message.
///
/// Either way the task's latest message must be at least a lease old and QStash must no
/// longer hold it (still holding it, QStash is retrying or waiting for a flow-control slot,
/// and will deliver). A queued task that already had `UNDELIVERED_MESSAGES` messages with
/// no delivery is failed instead, saying what to check. Returns how many were published
/// again.
async fn republish_stalled(state: &AppState, q: &QStash) -> Result<u64, AppError> {
    let now = now_ms();
    let lease = state.timing.lease_ms;
    let rows: Vec<(i64, String, i64, i64, Option<String>, i64)> = sqlx::query_as(&format!(
        "SELECT t.id, t.status, t.updated_at, o.id, o.message_id, \
         (SELECT COUNT(*) FROM outbox c WHERE c.task_id = t.id AND c.created_at >= t.updated_at) \
         FROM tasks t JOIN outbox o ON o.task_id = t.id \
         WHERE o.id = (SELECT MAX(m.id) FROM outbox m WHERE m.task_id = t.id) \
         AND o.published_at IS NOT NULL AND (o.locked_until IS NULL OR o.locked_until < $1) \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id AND j.status = 'cancelled') \
         AND ((({}) AND o.published_at < $2) \
              OR (t.status = 'running' AND t.locked_until < $1 AND o.created_at < t.locked_until)) \
         ORDER BY o.id LIMIT $3",
        undelivered_since("$2")
    ))
    .bind(now)
    .bind(now - lease)
    .bind(RELAY_BATCH)
    .fetch_all(state.pool())
    .await
    .db("looking for tasks no delivery reached")?;
    let mut republished = 0;
    for (task_id, status, updated_at, outbox_id, message_id, untouched) in rows {
        let stalled = Stalled {
            task_id,
            status,
            updated_at,
            outbox_id,
            message_id,
            untouched,
        };
        // One relay looks at a message per lease: the row's lock says when it may look again.
        let mine: Option<i64> = sqlx::query_scalar(
            "UPDATE outbox SET locked_until = $1 WHERE id = $2 AND (locked_until IS NULL OR locked_until < $3) RETURNING id",
        )
        .bind(now + lease)
        .bind(stalled.outbox_id)
        .bind(now)
        .fetch_optional(state.pool())
        .await
        .db("looking at a published message")?;
        if mine.is_none() {
            continue;
        }
        match held(state, q, stalled.message_id.as_deref()).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(error) => {
                // Asked again after a lease; QStash being away is the status page's news.
                tracing::warn!(%error, "could not ask QStash about an undelivered message");
                return Ok(republished);
            }
        }
        if stalled.status == "queued" && stalled.untouched >= UNDELIVERED_MESSAGES {
            fail_undelivered(state, &stalled).await?;
            continue;
        }
        let inserted = sqlx::query(
            "INSERT INTO outbox (task_id, created_at, next_attempt_at) SELECT $1, $2, $2 \
             WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE task_id = $1 AND id > $3) \
             AND EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = $4 AND updated_at = $5)",
        )
        .bind(stalled.task_id)
        .bind(now)
        .bind(stalled.outbox_id)
        .bind(&stalled.status)
        .bind(stalled.updated_at)
        .execute(state.pool())
        .await
        .db("publishing a task again")?;
        if inserted.rows_affected() > 0 {
            tracing::warn!(
                task_id = stalled.task_id,
                status = %stalled.status,
                undelivered = stalled.untouched,
                "QStash holds no message that will finish this task; publishing it again"
            );
            republished += 1;
        }
    }
    Ok(republished)
}

/// Whether QStash still holds a message (it will deliver it, or try again). QStash keeps a
/// message only while it is being delivered or retried (`GET /v2/messages/{id}` answers 404
/// afterwards); a `state` that says it finished counts as gone too.
async fn held(state: &AppState, q: &QStash, message_id: Option<&str>) -> Result<bool, String> {
    let Some(id) = message_id.filter(|id| !id.is_empty()) else {
        return Ok(false);
    };
    let response = state
        .http
        .get(format!("{}/v2/messages/{id}", q.config.url))
        .bearer_auth(q.config.token.expose_secret())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("QStash is unreachable: {e}"))?;
    match response.status() {
        StatusCode::NOT_FOUND => Ok(false),
        s if s.is_success() => {
            let message: serde_json::Value = response
                .json()
                .await
                .map_err(|e| format!("QStash's message was not understood: {e}"))?;
            let finished = matches!(
                message["state"].as_str(),
                Some(
                    "DELIVERED"
                        | "FAILED"
                        | "ERROR"
                        | "CANCELED"
                        | "CANCELLED"
                        | "CANCEL_REQUESTED"
                )
            );
            Ok(!finished)
        }
        s => Err(format!("QStash answered {s} about message {id}")),
    }
}

/// Fails a queued task QStash never delivered, unless a delivery reached it meanwhile.
async fn fail_undelivered(state: &AppState, stalled: &Stalled) -> Result<(), AppError> {
    let message = format!(
        "QStash never delivered this task in {} tries: every delivery was refused or none came. \
         Check the signing keys (QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY) and the server clock \
         on the status page, then retry the job",
        stalled.untouched
    );
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let job: Option<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'failed', last_error = $1, locked_until = NULL, finished_at = $2, updated_at = $2 \
         WHERE id = $3 AND status = 'queued' AND updated_at = $4 RETURNING job_id",
    )
    .bind(&message)
    .bind(now)
    .bind(stalled.task_id)
    .bind(stalled.updated_at)
    .fetch_optional(&mut *tx)
    .await
    .db("failing a task")?;
    if let Some(job) = job {
        super::jobs::refresh_in(&mut tx, job).await?;
        tracing::warn!(task_id = stalled.task_id, "{message}");
    }
    tx.commit().await.db("failing a task")?;
    state.work.notify_waiters();
    Ok(())
}

/// Wakes this process's relay (after the outbox rows committed).
pub fn nudge(state: &AppState) {
    if let Some(q) = &state.qstash {
        q.relay.notify_one();
    }
}

/// One outbox row claimed for publishing.
struct Pending {
    id: i64,
    task_id: i64,
    kind: String,
    batch: bool,
    attempts: i64,
}

const RELAY_BATCH: i64 = 100;
/// How long a relay holds rows it is publishing before another may take them.
const RELAY_LEASE_MS: i64 = 90_000;
/// How often a relay looks for rows other processes queued (it is woken for its own).
const RELAY_IDLE: Duration = Duration::from_secs(2);

async fn claim_pending(state: &AppState) -> Result<Vec<Pending>, AppError> {
    let now = now_ms();
    let lock = if state.db.backend == Backend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "UPDATE outbox SET locked_until = $1 WHERE id IN (SELECT id FROM outbox WHERE published_at IS NULL \
         AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until < $2) ORDER BY id LIMIT $3{lock}) \
         RETURNING id"
    ))
    .bind(now + RELAY_LEASE_MS)
    .bind(now)
    .bind(RELAY_BATCH)
    .fetch_all(state.pool())
    .await
    .db("claiming the outbox")?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // What each message needs, in one read (an outbox row goes with its task).
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT o.id, o.task_id, o.attempts, t.kind, j.content_id FROM outbox o JOIN tasks t ON t.id = o.task_id \
         JOIN jobs j ON j.id = t.job_id WHERE o.id IN ({}) ORDER BY o.id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String, Option<i64>)>(&sql);
    for id in &ids {
        query = query.bind(id);
    }
    let rows = query
        .fetch_all(state.pool())
        .await
        .db("reading the outbox")?;
    let pending = rows
        .into_iter()
        .map(|(id, task_id, attempts, kind, content_id)| Pending {
            id,
            task_id,
            attempts,
            kind,
            batch: content_id.is_none(),
        })
        .collect();
    Ok(pending)
}

/// `Upstash-Flow-Control-Value` for a kind: the admin's concurrency and per-window limits.
fn flow_control(state: &AppState, limits: KindLimits) -> String {
    let mut value = format!("parallelism={}", limits.concurrency);
    if limits.per_window > 0 {
        value.push_str(&format!(
            ", rate={}, period={}s",
            limits.per_window,
            state.limits.window().as_secs().max(1)
        ));
    }
    value
}

/// Publishes a batch: each message's id, or why QStash refused that one; Err when the
/// batch as a whole did not go through.
async fn publish(
    state: &AppState,
    q: &QStash,
    pending: &[Pending],
) -> Result<Vec<Result<String, String>>, String> {
    let (settings, _) = super::settings::for_tasks(state)
        .await
        .map_err(|e| e.message)?;
    let install = install_id(state).await.map_err(|e| e.message)?;
    let messages: Vec<serde_json::Value> = pending
        .iter()
        .map(|p| {
            let limits = KindLimits::of(&settings, &p.kind);
            json!({
                "destination": q.worker_url(route_of(&p.kind, p.batch)),
                "body": serde_json::to_string(&Delivery { task_id: p.task_id }).unwrap_or_default(),
                "headers": {
                    "Content-Type": "application/json",
                    "Upstash-Retries": q.config.retries.to_string(),
                    "Upstash-Deduplication-Id": deduplication_id(&install, p.task_id, p.id),
                    "Upstash-Failure-Callback": q.worker_url(FAILED_ROUTE),
                    "Upstash-Flow-Control-Key": flow_control_key(&install, &p.kind),
                    "Upstash-Flow-Control-Value": flow_control(state, limits),
                    "Upstash-Timeout": format!("{}s", q.config.timeout.as_secs()),
                },
            })
        })
        .collect();
    let response = state
        .http
        .post(format!("{}/v2/batch", q.config.url))
        .bearer_auth(q.config.token.expose_secret())
        .timeout(Duration::from_secs(30))
        .json(&messages)
        .send()
        .await
        .map_err(|e| format!("QStash is unreachable: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        return Err(format!("QStash answered {status}: {text}"));
    }
    let answers: Vec<serde_json::Value> = response
        .json()
        .await
        .map_err(|e| format!("QStash's answer was not understood: {e}"))?;
    if answers.len() != pending.len() {
        return Err(format!(
            "QStash answered {} results for {} messages",
            answers.len(),
            pending.len()
        ));
    }
    Ok(answers
        .iter()
        .map(|a| {
            a["messageId"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("QStash refused a message: {a}"))
        })
        .collect())
}

/// Tries a row again later: 1 s, 2 s, 4 s … up to a minute, so nothing is dropped while
/// QStash is away.
async fn reschedule(state: &AppState, p: &Pending, error: &str, now: i64) -> Result<(), AppError> {
    let wait = 1000i64 << p.attempts.clamp(0, 6);
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, locked_until = NULL WHERE id = $3",
    )
    .bind(now + wait.min(60_000))
    .bind(error)
    .bind(p.id)
    .execute(state.pool())
    .await
    .db("rescheduling a publication")?;
    Ok(())
}

/// Publishes due outbox rows until there are none; returns how many were published.
pub async fn relay_once(state: &AppState) -> Result<usize, AppError> {
    let Some(q) = state.qstash.clone() else {
        return Ok(0);
    };
    let mut published = 0;
    republish_stalled(state, &q).await?;
    loop {
        let pending = claim_pending(state).await?;
        if pending.is_empty() {
            return Ok(published);
        }
        let now = now_ms();
        match publish(state, &q, &pending).await {
            Ok(results) => {
                let mut tx = state.pool().begin().await.db("starting a transaction")?;
                for (p, result) in pending.iter().zip(&results) {
                    if let Ok(message) = result {
                        sqlx::query(
                            "UPDATE outbox SET published_at = $1, message_id = $2, last_error = NULL, locked_until = NULL WHERE id = $3",
                        )
                        .bind(now)
                        .bind(message)
                        .bind(p.id)
                        .execute(&mut *tx)
                        .await
                        .db("recording a publication")?;
                        published += 1;
                    }
                }
                tx.commit().await.db("recording publications")?;
                q.seen().last_publish_ms = Some(now);
                // Only the refused ones wait; the rest went out.
                let mut refused = None;
                for (p, result) in pending.iter().zip(&results) {
                    if let Err(error) = result {
                        reschedule(state, p, error, now).await?;
                        refused = Some(error.clone());
                    }
                }
                state.work.notify_waiters();
                if let Some(error) = refused {
                    tracing::warn!(%error, "QStash refused a message; will retry");
                    return Err(AppError::new(
                        crate::error::ErrorCode::ProviderUnavailable,
                        error,
                    ));
                }
            }
            Err(error) => {
                tracing::warn!(%error, rows = pending.len(), "publishing to QStash failed; will retry");
                for p in &pending {
                    reschedule(state, p, &error, now).await?;
                }
                state.work.notify_waiters();
                return Err(AppError::new(
                    crate::error::ErrorCode::ProviderUnavailable,
                    error,
                ));
            }
        }
    }
}

/// The relay: publishes as soon as it is nudged, retries failed publications when they
/// fall due, and looks for other processes' rows every few seconds.
pub fn spawn_relay(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(q) = state.qstash.clone() else {
            return;
        };
        loop {
            let nudged = q.relay.notified();
            let wait = match relay_once(&state).await {
                Ok(_) => next_due(&state).await.unwrap_or(RELAY_IDLE),
                Err(e) => {
                    tracing::debug!(error = %e.message, "relay pass failed");
                    next_due(&state).await.unwrap_or(RELAY_IDLE)
                }
            };
            let _ = tokio::time::timeout(wait.min(RELAY_IDLE), nudged).await;
            prune_published(&state).await;
        }
    })
}

async fn next_due(state: &AppState) -> Option<Duration> {
    let due: Option<i64> =
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(state.pool())
            .await
            .ok()?;
    due.map(|at| Duration::from_millis((at - now_ms()).clamp(0, 60_000) as u64))
}

/// Published rows are kept a day, to show what was sent; those of a task not finished yet
/// stay as long as it does: a failure callback is matched against the task's latest
/// message, and `republish_stalled` counts the messages no delivery reached (QStash may
/// retry a message for days).
async fn prune_published(state: &AppState) {
    let _ = sqlx::query(
        "DELETE FROM outbox WHERE published_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM tasks t WHERE t.id = outbox.task_id AND t.status IN ('queued', 'running'))",
    )
    .bind(now_ms() - 86_400_000)
    .execute(state.pool())
    .await;
}

pub async fn status(state: &AppState) -> Result<Option<TransportStatus>, AppError> {
    let Some(q) = &state.qstash else {
        return Ok(None);
    };
    let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(state.pool())
        .await
        .db("counting the outbox")?;
    let error: Option<String> = sqlx::query_scalar(
        "SELECT last_error FROM outbox WHERE published_at IS NULL AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(state.pool())
    .await
    .db("reading the outbox")?;
    // Stuck: published (nothing of it waits in the outbox) and no delivery within the lease
    // after it fell due; waiting since it fell due or a delivery last answered it.
    let now = now_ms();
    let (stuck, since): (i64, Option<i64>) = sqlx::query_as(&format!(
        "SELECT COUNT(*), MIN(CASE WHEN t.run_at > t.updated_at THEN t.run_at ELSE t.updated_at END) \
         FROM tasks t WHERE {} \
         AND EXISTS (SELECT 1 FROM outbox o WHERE o.task_id = t.id AND o.published_at IS NOT NULL) \
         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.task_id = t.id AND o.published_at IS NULL)",
        undelivered_since("$1")
    ))
    .bind(now - state.timing.lease_ms)
    .fetch_one(state.pool())
    .await
    .db("counting tasks no delivery reached")?;
    let seen = q.seen().clone();
    Ok(Some(TransportStatus {
        outbox_depth: depth,
        last_publish_error: error,
        last_publish_ms: seen.last_publish_ms,
        last_delivery_ms: seen.last_delivery_ms,
        stuck_tasks: stuck,
        oldest_stuck_ms: since.filter(|_| stuck > 0).map(|at| (now - at).max(0)),
    }))
}

/// Checks the token against QStash (it lists the dead-letter queue, which any valid token
/// may read).
pub async fn check_token(state: &AppState) -> Result<(), String> {
    let Some(q) = &state.qstash else {
        return Ok(());
    };
    let response = state
        .http
        .get(format!("{}/v2/dlq", q.config.url))
        .bearer_auth(q.config.token.expose_secret())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("QStash is unreachable at {}: {e}", q.config.url))?;
    match response.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err("QStash refused QSTASH_TOKEN".to_owned())
        }
        s => Err(format!("QStash answered {s}")),
    }
}

// ---------------------------------------------------------------------------------------
// Signatures

/// Why a delivery's signature was refused: the reason code the 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    MalformedToken,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongUrl,
    BodyMismatch,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingSignature => "missing_signature",
            Refusal::MalformedToken => "malformed_token",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongUrl => "wrong_url",
            Refusal::BodyMismatch => "body_mismatch",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::MissingSignature => "the request has no Upstash-Signature header",
            Refusal::MalformedToken => "the Upstash-Signature header is not a JWT",
            Refusal::BadSignature => "the signature matches neither signing key",
            Refusal::Expired => "the signature has expired",
            Refusal::NotYetValid => "the signature is not valid yet",
            Refusal::WrongIssuer => "the signature was not issued by Upstash",
            Refusal::WrongUrl => "the signature was made for another URL",
            Refusal::BodyMismatch => "the body is not the one that was signed",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    body: String,
}

/// Verifies an `Upstash-Signature` for `url` and the raw `body`: HS256 with the current
/// signing key, then the next; `iss`, `exp`, `nbf` (with the tolerance), `sub` and the
/// SHA-256 of the body.
pub fn verify(
    config: &QStashConfig,
    signature: Option<&str>,
    url: &str,
    body: &[u8],
) -> Result<(), Refusal> {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let token = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::MissingSignature)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["Upstash"]);
    validation.validate_nbf = true;
    // QStash sends an empty `aud`; its own receivers ignore it.
    validation.validate_aud = false;
    validation.leeway = config.tolerance.as_secs();
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    let keys = std::iter::once(&config.current_key).chain(config.next_key.as_ref());
    let mut outcome = Err(Refusal::BadSignature);
    for key in keys {
        let key = DecodingKey::from_secret(key.expose_secret().as_bytes());
        match decode::<Claims>(token, &key, &validation) {
            Ok(data) => {
                outcome = Ok(data.claims);
                break;
            }
            Err(e) => {
                outcome = Err(match e.kind() {
                    ErrorKind::InvalidSignature => Refusal::BadSignature,
                    ErrorKind::ExpiredSignature => Refusal::Expired,
                    ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                    ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                        Refusal::WrongIssuer
                    }
                    _ => Refusal::MalformedToken,
                });
                // Only a signature that fails to match is worth the next key.
                if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                    break;
                }
            }
        }
    }
    let claims = outcome?;
    if claims.sub != url {
        return Err(Refusal::WrongUrl);
    }
    use sha2::{Digest, Sha256};
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(body));
    if claims.body.trim_end_matches('=') != digest {
        return Err(Refusal::BodyMismatch);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Worker routes

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/workers/failed", post(failed))
        .route("/api/workers/{route}", post(worker))
}

fn refuse(refusal: Refusal) -> Response {
    tracing::warn!(reason = refusal.code(), "refused a QStash delivery");
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": { "code": "unauthorized", "reason": refusal.code(), "message": refusal.message() } })),
    )
        .into_response()
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// 5xx with `Retry-After`: QStash delivers again then.
fn again(after: Duration, message: &str) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, message);
    let secs = after.as_millis().div_ceil(1000).max(1) as u64;
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// 489 with `Upstash-NonRetryable-Error`: straight to the dead-letter queue.
fn give_up(message: &str) -> Response {
    let mut response = answer(
        StatusCode::from_u16(489).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
        message,
    );
    response.headers_mut().insert(
        "upstash-nonretryable-error",
        HeaderValue::from_static("true"),
    );
    response
}

/// Checks the signature against the URL QStash called: the public base and this path.
fn signed(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<(), Box<Response>> {
    let Some(q) = &state.qstash else {
        return Err(Box::new(answer(
            StatusCode::NOT_FOUND,
            "the QStash transport is not configured (QSTASH_TOKEN)",
        )));
    };
    let url = format!(
        "{}{}",
        q.base,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let signature = headers
        .get("upstash-signature")
        .and_then(|v| v.to_str().ok());
    verify(&q.config, signature, &url, body).map_err(|r| Box::new(refuse(r)))
}

async fn worker(
    State(state): State<AppState>,
    Path(route): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed(&state, &headers, &uri, &body) {
        return *refused;
    }
    if let Some(q) = &state.qstash {
        q.seen().last_delivery_ms = Some(now_ms());
    }
    let delivery: Delivery = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return give_up(&format!("the body is not a task delivery: {e}")),
    };
    match deliver(&state, &route, delivery.task_id).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e.message, task_id = delivery.task_id, "a delivery failed");
            again(Duration::from_secs(5), &e.message)
        }
    }
}

/// What a delivery found the task doing.
enum Claimed {
    Run(ClaimedTask),
    Answer(Response),
}

async fn deliver(state: &AppState, route: &str, task_id: i64) -> Result<Response, AppError> {
    let task = match claim_task(state, route, task_id).await? {
        Claimed::Run(task) => task,
        Claimed::Answer(response) => return Ok(response),
    };
    let limit = state
        .qstash
        .as_ref()
        .map(|q| deadline(&q.config, &task.kind));
    engine::run_claimed_within(state, task, limit).await?;
    let (status, run_at, error): (String, i64, Option<String>) =
        sqlx::query_as("SELECT status, run_at, last_error FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_one(state.pool())
            .await
            .db("reading a task")?;
    Ok(match status.as_str() {
        "queued" => again(
            Duration::from_millis((run_at - now_ms()).max(0) as u64),
            error.as_deref().unwrap_or("retrying"),
        ),
        "failed" => give_up(error.as_deref().unwrap_or("the task failed")),
        other => answer(StatusCode::OK, other),
    })
}

/// Claims the delivered task unless somebody holds it; when a retry runs is QStash's to
/// decide (it was told with `Retry-After`). A finished task, or one held by a live lease
/// (a duplicate delivery), answers 2xx and runs nothing. Should the holder have died, its
/// lease runs out and the relay publishes the task again (`republish_stalled`).
async fn claim_task(state: &AppState, route: &str, task_id: i64) -> Result<Claimed, AppError> {
    let now = now_ms();
    // kind, status, lease, the job's content (none for a batch), the job's status
    type Row = (String, String, Option<i64>, Option<i64>, String);
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.kind, t.status, t.locked_until, j.content_id, j.status FROM tasks t \
         JOIN jobs j ON j.id = t.job_id WHERE t.id = $1",
    )
    .bind(task_id)
    .fetch_optional(state.pool())
    .await
    .db("reading a task")?;
    let Some((kind, status, locked_until, content_id, job_status)) = row else {
        return Ok(Claimed::Answer(answer(
            StatusCode::OK,
            "the task no longer exists (its content was deleted)",
        )));
    };
    if route_of(&kind, content_id.is_none()) != route {
        return Ok(Claimed::Answer(give_up(&format!(
            "task {task_id} is not delivered to /api/workers/{route}"
        ))));
    }
    if job_status == "cancelled" || matches!(status.as_str(), "succeeded" | "failed" | "cancelled")
    {
        return Ok(Claimed::Answer(answer(
            StatusCode::OK,
            &format!("already {status}"),
        )));
    }
    if status == "running" && locked_until.is_some_and(|until| until >= now) {
        return Ok(Claimed::Answer(answer(
            StatusCode::OK,
            "already running (another delivery holds it)",
        )));
    }
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let claimed = sqlx::query(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, locked_until = $1, worker_id = $2, updated_at = $3, \
         started_at = COALESCE(started_at, $3) \
         WHERE id = $4 AND (status = 'queued' OR (status = 'running' AND locked_until < $3)) \
         RETURNING id, job_id, kind, content_id, scene_id, attempt, max_attempts",
    )
    .bind(now + state.timing.lease_ms)
    .bind(&*state.worker_id)
    .bind(now)
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await
    .db("claiming a task")?;
    let Some(row) = claimed else {
        // Another delivery of the same message got there first.
        tx.commit().await.db("claiming a task")?;
        return Ok(Claimed::Answer(answer(
            StatusCode::OK,
            "already running (another delivery just claimed it)",
        )));
    };
    let task = ClaimedTask::from_row(&row)?;
    super::jobs::mark_started(&mut tx, task.job_id).await?;
    tx.commit().await.db("claiming a task")?;
    Ok(Claimed::Run(task))
}

/// QStash's failure callback: the body describes the message it gave up on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    #[serde(default)]
    status: Option<i64>,
    /// base64 of the worker's last answer.
    #[serde(default)]
    body: Option<String>,
    /// base64 of the message's own body.
    source_body: String,
    /// The message QStash gave up on.
    #[serde(default)]
    source_message_id: Option<String>,
    #[serde(default)]
    retried: Option<i64>,
}

async fn failed(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed(&state, &headers, &uri, &body) {
        return *refused;
    }
    let failure: Failure = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return give_up(&format!("the body is not a QStash failure callback: {e}")),
    };
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let Some(delivery) =
        decode(&failure.source_body).and_then(|text| serde_json::from_str::<Delivery>(&text).ok())
    else {
        return give_up("the failure callback names no task");
    };
    let last = failure
        .body
        .as_deref()
        .and_then(decode)
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .or(Some(text))
        })
        .unwrap_or_default();
    let message = format!(
        "QStash gave up after {} deliveries (last answer {}{}{})",
        failure.retried.unwrap_or(0) + 1,
        failure
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into()),
        if last.is_empty() { "" } else { ": " },
        last.chars().take(300).collect::<String>()
    );
    match mark_failed(
        &state,
        delivery.task_id,
        failure.source_message_id.as_deref(),
        &message,
    )
    .await
    {
        Ok(()) => answer(StatusCode::OK, "recorded"),
        Err(e) => again(Duration::from_secs(5), &e.message),
    }
}

/// Marks a task QStash gave up on as failed, unless it finished meanwhile, a live lease
/// holds it, or the message is not the task's latest (the task was retried or published
/// again since).
async fn mark_failed(
    state: &AppState,
    task_id: i64,
    message_id: Option<&str>,
    message: &str,
) -> Result<(), AppError> {
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let job: Option<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'failed', last_error = $1, locked_until = NULL, finished_at = $2, updated_at = $2 \
         WHERE id = $3 AND (status = 'queued' OR (status = 'running' AND locked_until < $2)) \
         AND ($4 = '' OR $4 = (SELECT o.message_id FROM outbox o WHERE o.task_id = $3 AND o.published_at IS NOT NULL \
                               ORDER BY o.id DESC LIMIT 1)) \
         RETURNING job_id",
    )
    .bind(message)
    .bind(now)
    .bind(task_id)
    .bind(message_id.unwrap_or_default())
    .fetch_optional(&mut *tx)
    .await
    .db("failing a task")?;
    if let Some(job) = job {
        super::jobs::refresh_in(&mut tx, job).await?;
    }
    tx.commit().await.db("failing a task")?;
    state.work.notify_waiters();
    Ok(())
}

/// How long a delivery may work before it stops, so its answer reaches QStash before
/// QStash's timeout: a render needs up to 30 s more to stop ffmpeg and clean up.
fn deadline(config: &QStashConfig, kind: &str) -> Duration {
    let margin = if kind == RENDER { 35 } else { 2 };
    config.timeout.saturating_sub(Duration::from_secs(margin))
}

/// Refuses, at publish time, work that could not finish within QStash's timeout, with
/// what to change.
pub fn check_fits(
    state: &AppState,
    kind: &str,
    provider_timeout: Duration,
    video_ms: i64,
) -> Result<(), AppError> {
    let Some(q) = &state.qstash else {
        return Ok(());
    };
    let limit = deadline(&q.config, kind);
    let secs = q.config.timeout.as_secs();
    if kind == RENDER {
        // Renders run at about 2.7x realtime here; a video as long as the limit is the
        // most a render is trusted to finish in.
        if video_ms > limit.as_millis() as i64 {
            return Err(AppError::validation(
                "id",
                format!(
                    "this video lasts {} s, longer than a render may take within the QStash timeout of {secs} s; \
                     raise CREVID_QSTASH_TIMEOUT_SECS (QStash allows up to your plan's maximum) or use the embedded queue",
                    video_ms / 1000
                ),
            ));
        }
    } else if provider_timeout >= limit {
        return Err(AppError::validation(
            "kind",
            format!(
                "the provider timeout ({} s, Settings) is longer than the QStash timeout ({secs} s): a slow answer would \
                 be cut off; lower the provider timeout or raise CREVID_QSTASH_TIMEOUT_SECS",
                provider_timeout.as_secs()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssr::jobs::SCENE_IMAGE;

    #[test]
    fn routes_follow_the_seeds() {
        assert_eq!(route_of(SCENE_IMAGE, false), MEDIA_ROUTE);
        assert_eq!(route_of(SCENE_AUDIO, false), TTS_ROUTE);
        assert_eq!(route_of(SCENE_AUDIO, true), BATCH_ROUTE);
        assert_eq!(route_of(SCENE_IMAGE, true), BATCH_ROUTE);
        assert_eq!(route_of(RENDER, false), RENDER_ROUTE);
    }
}
