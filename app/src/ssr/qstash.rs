//! The QStash transport (DESIGN.md, "Transports"). The task rows stay the truth; an
//! outbox row committed with each queued task is published by a relay to
//! `{QSTASH_URL}/v2/batch`, and QStash calls `/api/workers/{route}` with a signed request
//! that claims the task idempotently and runs it within the request. The answer tells
//! QStash what to do next: 2xx done (or nothing to do), 5xx with `Retry-After` try again,
//! 489 with `Upstash-NonRetryable-Error` give up. When QStash gives up it calls
//! `/api/workers/failed`, which records the failure on the task.

use std::collections::HashMap;
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
use super::engine::{self, ClaimedTask, KindLimits, KINDS};
use super::error::DbResultExt;
use super::jobs::{RENDER, SCENE_AUDIO, WEBHOOK_DELIVERY};
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
    /// Leave a message QStash gave up on in its dead-letter queue after the failure
    /// callback recorded it (`CREVID_QSTASH_DLQ=keep`), for an admin to look at in the
    /// Upstash console; by default it is deleted there (`DELETE /v2/dlq/{dlqId}`).
    pub keep_dead_letters: bool,
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
            keep_dead_letters: false,
        }
    }

    /// See [`QStashConfig::keep_dead_letters`].
    pub fn keeping_dead_letters(mut self, keep: bool) -> Self {
        self.keep_dead_letters = keep;
        self
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
    /// Held while this process pins flow-control limits (`sync_flow_control`).
    pin_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    last_delivery_ms: Option<i64>,
    last_publish_ms: Option<i64>,
    /// The retries publishing steps down to after QStash refused `QStashConfig::retries`
    /// as above the account's plan; `None` while nothing was refused.
    retries_cap: Option<u32>,
    /// The flow-control limits this process last pinned, per task kind.
    pinned: HashMap<&'static str, FlowLimits>,
    /// Why the last pin failed; cleared by the next that succeeds.
    pin_error: Option<String>,
    /// When a relay may try a failed pin again (ms since the epoch).
    pin_retry_at: Option<i64>,
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
            pin_lock: tokio::sync::Mutex::new(()),
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

/// The `Upstash-Label` every message of this installation carries: the status page counts
/// the installation's dead letters by it.
pub fn install_label(install: &str) -> String {
    format!("crevid-{install}")
}

/// The `Upstash-Label` of a job's messages: cancelling the job cancels them by it.
pub fn job_label(install: &str, job_id: i64) -> String {
    format!("crevid-{install}-job-{job_id}")
}

/// A message's `Upstash-Label` list: the installation, the job and the kind (dots become
/// dashes, as labels are safest in `[A-Za-z0-9_-]`), so that the Upstash console's logs
/// and DLQ can be filtered by each.
pub fn labels(install: &str, job_id: i64, kind: &str) -> String {
    format!(
        "{},{},crevid-{install}-{}",
        install_label(install),
        job_label(install, job_id),
        kind.replace('.', "-")
    )
}

/// `Upstash-Retry-Delay`: QStash's wait before retry number `retried + 1` when a delivery
/// got no answer with a `Retry-After` (a timeout, a restarting server, a proxy's 502), in
/// milliseconds. The first retries follow the embedded queue's backoff without the jitter
/// (`engine`: 2, 4, 8, 16, 32 s with the default base), instead of QStash's default 12 s
/// and 2.5 min while a creator watches; from the sixth on, QStash's own long tail
/// (`e^(2.5·(retried − 3))` s: 2.5 min, 30 min, 6 h) takes over, so that an outage longer
/// than a restart still ends in a delivery rather than a dead letter.
pub fn retry_delay(retry_base_ms: u64) -> String {
    format!(
        "max(min(300000, {retry_base_ms} * pow(2, retried + 1)), 1000 * exp(2.5 * (retried - 3)))"
    )
}

/// The seeds' worker route names.
pub const MEDIA_ROUTE: &str = "media-generation";
pub const TTS_ROUTE: &str = "tts-generation";
pub const BATCH_ROUTE: &str = "batch-operation";
pub const RENDER_ROUTE: &str = "render";
pub const FAILED_ROUTE: &str = "failed";
/// Webhook deliveries (`webhooks`): not one of the seeds' routes.
pub const WEBHOOK_ROUTE: &str = "webhook-delivery";

/// The route a task is delivered to: tasks of a job over several contents go to the
/// batch route, the others to their kind's.
fn route_of(kind: &str, batch: bool) -> &'static str {
    match (kind, batch) {
        (RENDER, _) => RENDER_ROUTE,
        (WEBHOOK_DELIVERY, _) => WEBHOOK_ROUTE,
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
        .get(api_url(&q.config.url, &["v2", "messages", id], &[]))
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
        super::jobs::refresh_in(state, &mut tx, job).await?;
        tracing::warn!(task_id = stalled.task_id, "{message}");
    }
    tx.commit().await.db("failing a task")?;
    super::webhooks::wake(state);
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
    job_id: i64,
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
        "SELECT o.id, o.task_id, o.attempts, t.kind, t.job_id, j.content_id FROM outbox o JOIN tasks t ON t.id = o.task_id \
         JOIN jobs j ON j.id = t.job_id WHERE o.id IN ({}) ORDER BY o.id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String, i64, Option<i64>)>(&sql);
    for id in &ids {
        query = query.bind(id);
    }
    let rows = query
        .fetch_all(state.pool())
        .await
        .db("reading the outbox")?;
    let pending = rows
        .into_iter()
        .map(
            |(id, task_id, attempts, kind, job_id, content_id)| Pending {
                id,
                task_id,
                job_id,
                attempts,
                kind,
                batch: content_id.is_none(),
            },
        )
        .collect();
    Ok(pending)
}

/// A kind's flow-control limits: the admin's concurrency, and starts per rate window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowLimits {
    parallelism: i64,
    /// Starts per `period` seconds, when the kind has a rate limit.
    rate: Option<(i64, u64)>,
}

impl FlowLimits {
    fn of(state: &AppState, limits: KindLimits) -> Self {
        Self {
            parallelism: limits.concurrency,
            rate: (limits.per_window > 0)
                .then(|| (limits.per_window, state.limits.window().as_secs().max(1))),
        }
    }

    /// `Upstash-Flow-Control-Value`.
    fn value(self) -> String {
        let mut value = format!("parallelism={}", self.parallelism);
        if let Some((rate, period)) = self.rate {
            value.push_str(&format!(", rate={rate}, period={period}s"));
        }
        value
    }
}

/// Pins each kind's flow-control key to the admin's current limits
/// (`POST /v2/flowControl/{key}/pin`), so that a lowered limit holds at once: without a
/// pin, QStash applies the highest value among the messages already published under the
/// key until they drain. A kind without a rate limit has its rate unpinned.
///
/// A pin restarts the key's rate period, so a key is pinned only when QStash's own view
/// (`GET /v2/flowControl/{key}`) differs from the limits: a process starting, or a second
/// replica, does not let a burst through a provider's per-minute limit. Bounded by
/// `PIN_TIMEOUT` so that saving settings never waits on QStash for long; a kind that
/// could not be pinned is tried again by the relay after `PIN_RETRY`. Saving settings
/// calls it; so does each relay pass, which finds limits changed by another process.
pub async fn sync_flow_control(state: &AppState) {
    let Some(q) = &state.qstash else {
        return;
    };
    let _syncing = q.pin_lock.lock().await;
    pin_within(state, q).await;
}

/// The relay's pass at `sync_flow_control`: skipped while another runs, and after a
/// failure until `PIN_RETRY` has passed.
async fn sync_flow_control_when_due(state: &AppState, q: &QStash) {
    let Ok(_syncing) = q.pin_lock.try_lock() else {
        return;
    };
    if q.seen().pin_retry_at.is_some_and(|at| now_ms() < at) {
        return;
    }
    pin_within(state, q).await;
}

async fn pin_within(state: &AppState, q: &QStash) {
    let outcome = tokio::time::timeout(PIN_TIMEOUT, pin_flow_control(state, q))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "QStash did not answer within {} s",
                PIN_TIMEOUT.as_secs()
            ))
        });
    let mut seen = q.seen();
    match outcome {
        Ok(()) => {
            seen.pin_error = None;
            seen.pin_retry_at = None;
        }
        Err(error) => {
            tracing::warn!(%error, "could not pin QStash's flow-control limits; will try again");
            seen.pin_error = Some(error);
            seen.pin_retry_at = Some(now_ms() + PIN_RETRY.as_millis() as i64);
        }
    }
}

/// How long saving settings may wait for QStash to take the new limits.
const PIN_TIMEOUT: Duration = Duration::from_secs(5);
/// When a relay tries again a pin that failed.
const PIN_RETRY: Duration = Duration::from_secs(60);

async fn pin_flow_control(state: &AppState, q: &QStash) -> Result<(), String> {
    let (settings, _) = super::settings::for_tasks(state)
        .await
        .map_err(|e| e.message)?;
    let install = install_id(state).await.map_err(|e| e.message)?;
    let mut failures = Vec::new();
    for kind in KINDS {
        let want = FlowLimits::of(state, KindLimits::of(&settings, kind));
        if q.seen().pinned.get(kind) == Some(&want) {
            continue;
        }
        match pin_kind(state, q, &flow_control_key(&install, kind), want).await {
            Ok(()) => {
                q.seen().pinned.insert(kind, want);
            }
            // The other kinds are still worth pinning.
            Err(e) => failures.push(format!("{kind}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Pins one key to `want` unless QStash already applies exactly that, pinned.
async fn pin_kind(
    state: &AppState,
    q: &QStash,
    key: &str,
    want: FlowLimits,
) -> Result<(), ApiFailure> {
    let url = |action: Option<&str>, query: &[(&str, String)]| {
        let mut segments = vec!["v2", "flowControl", key];
        segments.extend(action);
        api_url(&q.config.url, &segments, query)
    };
    let current = match qstash_call(state, q, reqwest::Method::GET, &url(None, &[])).await {
        Ok(body) => serde_json::from_str::<serde_json::Value>(&body).ok(),
        // Nothing published or pinned under it yet.
        Err(ApiFailure::Status(StatusCode::NOT_FOUND, _)) => None,
        Err(e) => return Err(e),
    };
    let change = pin_change(current.as_ref(), want);
    if !change.pin.is_empty() {
        qstash_call(
            state,
            q,
            reqwest::Method::POST,
            &url(Some("pin"), &change.pin),
        )
        .await?;
    }
    if change.unpin_rate {
        let unpin = url(Some("unpin"), &[("rate", "true".to_owned())]);
        qstash_call(state, q, reqwest::Method::POST, &unpin).await?;
    }
    Ok(())
}

/// What to send to make a key (as `GET /v2/flowControl/{key}` describes it, or None when
/// QStash has no such key) apply `want`, pinned.
#[derive(Debug, PartialEq, Eq)]
struct PinChange {
    /// The pin's query: empty when nothing is to be pinned.
    pin: Vec<(&'static str, String)>,
    unpin_rate: bool,
}

/// Only what differs is sent: pinning a rate restarts its period, so changing the
/// parallelism alone must not pin the rate again (that would let a second burst of the
/// per-minute limit through).
fn pin_change(current: Option<&serde_json::Value>, want: FlowLimits) -> PinChange {
    let key = current.cloned().unwrap_or_default();
    let pinned = |flag: &str| key[flag].as_bool() == Some(true);
    let mut pin = Vec::new();
    if !(pinned("isPinnedParallelism") && key["parallelismMax"].as_i64() == Some(want.parallelism))
    {
        pin.push(("parallelism", want.parallelism.to_string()));
    }
    let mut unpin_rate = false;
    match want.rate {
        Some((rate, period)) => {
            let same = pinned("isPinnedRate")
                && key["rateMax"].as_i64() == Some(rate)
                && key["ratePeriod"].as_u64() == Some(period);
            if !same {
                pin.push(("rate", rate.to_string()));
                pin.push(("period", period.to_string()));
            }
        }
        None => unpin_rate = pinned("isPinnedRate"),
    }
    PinChange { pin, unpin_rate }
}

/// Why a call to QStash's API did not succeed.
#[derive(Debug)]
enum ApiFailure {
    /// No answer: connection refused, timed out.
    Unreachable(String),
    /// An answer other than 2xx, with the start of its body.
    Status(StatusCode, String),
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Unreachable(e) => write!(f, "QStash is unreachable: {e}"),
            ApiFailure::Status(status, text) if text.is_empty() => {
                write!(f, "QStash answered {status}")
            }
            ApiFailure::Status(status, text) => write!(f, "QStash answered {status}: {text}"),
        }
    }
}

impl From<ApiFailure> for String {
    fn from(failure: ApiFailure) -> Self {
        failure.to_string()
    }
}

/// A URL of QStash's API: `base` and the path segments (each percent-encoded as a path
/// segment), then the query pairs (form-encoded).
fn api_url(base: &str, segments: &[&str], query: &[(&str, String)]) -> String {
    let Ok(mut url) = url::Url::parse(base) else {
        return base.to_owned();
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url.into()
}

/// One call to QStash's API with the token (10 s at most); the answer's body.
async fn qstash_call(
    state: &AppState,
    q: &QStash,
    method: reqwest::Method,
    url: &str,
) -> Result<String, ApiFailure> {
    let response = state
        .http
        .request(method, url)
        .bearer_auth(q.config.token.expose_secret())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| ApiFailure::Unreachable(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        Err(ApiFailure::Status(status, text.chars().take(300).collect()))
    }
}

/// The retries messages are published with: `CREVID_QSTASH_RETRIES`, or less when QStash
/// refused that many as above the account's plan.
fn retries(q: &QStash) -> u32 {
    match q.seen().retries_cap {
        Some(cap) => cap.min(q.config.retries),
        None => q.config.retries,
    }
}

/// The retries to try after QStash refused `tried` as above the plan: the plan's maximum
/// when the refusal names it (the largest number in it below `tried`), else the next step
/// down Upstash's plans (Pro 20, pay as you go 5, free 3), and 0 last.
fn lower_retries(refusal: &str, tried: u32) -> u32 {
    let named = refusal
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|n| *n < tried)
        .max();
    named.unwrap_or_else(|| [20, 5, 3, 0].into_iter().find(|n| *n < tried).unwrap_or(0))
}

/// Whether QStash refused a publish for its `Upstash-Retries` being above what the plan
/// allows: a 400 that speaks of retries and of a limit.
fn refuses_retries(status: StatusCode, text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    status == StatusCode::BAD_REQUEST
        && text.contains("retries")
        && ["plan", "at most", "maximum", "exceed", "limit", "allowed"]
            .iter()
            .any(|limit| text.contains(limit))
}

/// Publishes a batch: each message's id, or why QStash refused that one; Err when the
/// batch as a whole did not go through. When QStash refuses the retries as above the
/// account's plan, the batch goes again with fewer (`lower_retries`), and the status page
/// says so.
async fn publish(
    state: &AppState,
    q: &QStash,
    pending: &[Pending],
) -> Result<Vec<Result<String, String>>, String> {
    let (settings, _) = super::settings::for_tasks(state)
        .await
        .map_err(|e| e.message)?;
    let install = install_id(state).await.map_err(|e| e.message)?;
    let delay = retry_delay(state.timing.retry_base_ms);
    let response = loop {
        let retries = retries(q);
        let messages: Vec<serde_json::Value> = pending
            .iter()
            .map(|p| {
                let limits = FlowLimits::of(state, KindLimits::of(&settings, &p.kind));
                json!({
                    "destination": q.worker_url(route_of(&p.kind, p.batch)),
                    "body": serde_json::to_string(&Delivery { task_id: p.task_id }).unwrap_or_default(),
                    "headers": {
                        "Content-Type": "application/json",
                        "Upstash-Retries": retries.to_string(),
                        "Upstash-Retry-Delay": delay,
                        "Upstash-Deduplication-Id": deduplication_id(&install, p.task_id, p.id),
                        "Upstash-Failure-Callback": q.worker_url(FAILED_ROUTE),
                        "Upstash-Flow-Control-Key": flow_control_key(&install, &p.kind),
                        "Upstash-Flow-Control-Value": limits.value(),
                        "Upstash-Timeout": format!("{}s", q.config.timeout.as_secs()),
                        "Upstash-Label": labels(&install, p.job_id, &p.kind),
                        // The body names only a task, but it is CREVID's, not the console's.
                        "Upstash-Redact-Fields": "body",
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
        if status.is_success() {
            break response;
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        if refuses_retries(status, &text) && retries > 0 {
            let lower = lower_retries(&text, retries);
            tracing::warn!(
                refused = retries,
                now = lower,
                answer = %text,
                "QStash refused the retries as above the account's plan; publishing with fewer"
            );
            q.seen().retries_cap = Some(lower);
            continue;
        }
        return Err(format!("QStash answered {status}: {text}"));
    };
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
    sync_flow_control_when_due(state, &q).await;
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
                let mut orphans = Vec::new();
                for (p, result) in pending.iter().zip(&results) {
                    if let Ok(message) = result {
                        let recorded = sqlx::query(
                            "UPDATE outbox SET published_at = $1, message_id = $2, last_error = NULL, locked_until = NULL WHERE id = $3",
                        )
                        .bind(now)
                        .bind(message)
                        .bind(p.id)
                        .execute(&mut *tx)
                        .await
                        .db("recording a publication")?;
                        if recorded.rows_affected() == 0 {
                            // The job was cancelled while this row was being published.
                            orphans.push(message.clone());
                        }
                        published += 1;
                    }
                }
                tx.commit().await.db("recording publications")?;
                cancel_messages(state, orphans);
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

/// Cancels in QStash the messages of a job just cancelled (`DELETE /v2/messages?label=`
/// with the job's label), so that QStash stops delivering, and billing, what would only
/// be answered "already cancelled". The first try is bounded by `CANCEL_WAIT` so the
/// creator's cancel answers promptly; it is repeated in the background after
/// `CANCEL_AGAIN`, because QStash stops a bulk cancel at a message it cannot cancel (one
/// being delivered), which may be back in its retry queue a moment later. Whatever still
/// comes is answered 2xx without running anything.
pub async fn cancel_job(state: &AppState, job_id: i64) {
    let Some(q) = state.qstash.clone() else {
        return;
    };
    let install = match install_id(state).await {
        Ok(install) => install,
        Err(e) => {
            tracing::warn!(error = %e.message, job_id, "could not cancel a job's QStash messages");
            return;
        }
    };
    let url = api_url(
        &q.config.url,
        &["v2", "messages"],
        &[("label", job_label(&install, job_id))],
    );
    let first = tokio::time::timeout(CANCEL_WAIT, cancel_by(state, &q, &url, job_id)).await;
    if first.is_err() {
        tracing::warn!(
            job_id,
            "QStash did not answer a cancel within {} s; trying again in the background",
            CANCEL_WAIT.as_secs()
        );
    }
    let state = state.clone();
    tokio::spawn(async move {
        for wait in CANCEL_AGAIN {
            tokio::time::sleep(wait).await;
            if cancel_by(&state, &q, &url, job_id).await == Some(0) {
                break;
            }
        }
    });
}

/// How long a creator's cancel waits for QStash.
const CANCEL_WAIT: Duration = Duration::from_secs(3);
/// When a job's messages are cancelled again, after the first try.
const CANCEL_AGAIN: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

/// One bulk cancel; how many messages QStash cancelled, or None when it failed.
async fn cancel_by(state: &AppState, q: &QStash, url: &str, job_id: i64) -> Option<i64> {
    match qstash_call(state, q, reqwest::Method::DELETE, url).await {
        Ok(answer) => {
            let cancelled = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|a| a["cancelled"].as_i64())
                .unwrap_or(0);
            tracing::info!(job_id, cancelled, "cancelled the job's QStash messages");
            Some(cancelled)
        }
        Err(error) => {
            tracing::warn!(
                %error,
                job_id,
                "could not cancel the job's QStash messages; their deliveries will run nothing"
            );
            None
        }
    }
}

/// Cancels the given messages in QStash (`DELETE /v2/messages?messageIds=`), in the
/// background: the caller (a relay pass, a content being deleted) does not wait for it.
pub fn cancel_messages(state: &AppState, ids: Vec<String>) {
    let Some(q) = state.qstash.clone() else {
        return;
    };
    if ids.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        for chunk in ids.chunks(100) {
            let query: Vec<(&str, String)> =
                chunk.iter().map(|id| ("messageIds", id.clone())).collect();
            let url = api_url(&q.config.url, &["v2", "messages"], &query);
            if let Err(error) = qstash_call(&state, &q, reqwest::Method::DELETE, &url).await {
                tracing::warn!(%error, "could not cancel messages no task needs any more");
            }
        }
    });
}

/// The QStash messages of a content's unfinished tasks (batch jobs' included), read
/// before the content's deletion takes their rows, for `cancel_messages` afterwards.
pub async fn messages_of_content(
    state: &AppState,
    content_id: i64,
) -> Result<Vec<String>, AppError> {
    if state.qstash.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT o.message_id FROM outbox o JOIN tasks t ON t.id = o.task_id \
         WHERE t.content_id = $1 AND t.status IN ('queued', 'running') AND o.message_id IS NOT NULL",
    )
    .bind(content_id)
    .fetch_all(state.pool())
    .await
    .db("reading a content's QStash messages")
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
            tokio::select! {
                _ = tokio::time::timeout(wait.min(RELAY_IDLE), nudged) => {}
                // What is left in the outbox waits for the next process to start.
                () = state.shutting_down() => return,
            }
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

/// What the status page learns from the QStash account itself.
#[derive(Debug, Clone)]
pub struct AccountStatus {
    /// This installation's messages in QStash's dead-letter queue, counted up to
    /// `DLQ_PAGES` pages of 100 (`true`: there are more), or why they could not be.
    pub dead_letters: Result<(usize, bool), String>,
    /// How the configured signing keys compare with the account's (`GET /v2/keys`).
    pub keys: KeyCheck,
    /// Per task kind with a flow-control key in QStash: messages waiting for a slot and
    /// the parallelism QStash applies; or why they could not be read.
    pub flows: Result<Vec<FlowStatus>, String>,
    /// The retries messages are published with after QStash refused
    /// `CREVID_QSTASH_RETRIES` as above the account's plan.
    pub retries_cap: Option<u32>,
    /// Why pinning the flow-control limits last failed, if it did.
    pub pin_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The account's current and next keys are the configured ones.
    Match,
    /// The account rolled its keys: its current key is the configured next one.
    /// Deliveries still verify, with the next key, until the next roll.
    Rolled,
    /// The account's current key is neither configured key: deliveries are refused.
    Mismatch,
    /// QSTASH_NEXT_SIGNING_KEY is not set: after a roll, deliveries would be refused.
    NoNextKey,
    /// QSTASH_NEXT_SIGNING_KEY is not the account's next key: after the next roll,
    /// deliveries would be refused.
    WrongNext,
    /// QStash's answer named no keys.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct FlowStatus {
    pub kind: &'static str,
    pub wait_list: i64,
    /// The parallelism QStash applies, when it has one.
    pub parallelism: Option<i64>,
    /// The rate QStash applies (starts per period of seconds), when it has one.
    pub rate: Option<(i64, i64)>,
}

/// DLQ pages of 100 read at most, for the count on the status page.
const DLQ_PAGES: usize = 10;
/// How long the status page waits for QStash in all.
const ACCOUNT_WAIT: Duration = Duration::from_secs(8);

/// Asks QStash about this installation: the token and signing keys (`GET /v2/keys`), the
/// dead-letter queue (`GET /v2/dlq?label=`) and each kind's flow-control key
/// (`GET /v2/flowControl/{key}`), all at once and within `ACCOUNT_WAIT`. Err says why
/// QStash could not be asked at all (unreachable, or the token refused); the DLQ and the
/// flow-control keys failing are reported in their fields.
pub async fn account(state: &AppState) -> Result<Option<AccountStatus>, String> {
    let Some(q) = &state.qstash else {
        return Ok(None);
    };
    let install = install_id(state).await.map_err(|e| e.message)?;
    let asked = tokio::time::timeout(ACCOUNT_WAIT, async {
        tokio::join!(
            signing_keys(state, q),
            dead_letters(state, q, &install),
            flows(state, q, &install)
        )
    })
    .await
    .map_err(|_| {
        format!(
            "QStash at {} did not answer within {} s",
            q.config.url,
            ACCOUNT_WAIT.as_secs()
        )
    })?;
    let (keys, dead_letters, flows) = asked;
    let keys = match keys {
        Ok(keys) => keys,
        Err(ApiFailure::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _)) => {
            return Err("QStash refused QSTASH_TOKEN".to_owned())
        }
        Err(ApiFailure::Unreachable(e)) => {
            return Err(format!("QStash is unreachable at {}: {e}", q.config.url))
        }
        Err(e @ ApiFailure::Status(..)) => return Err(e.into()),
    };
    let seen = q.seen().clone();
    Ok(Some(AccountStatus {
        dead_letters: dead_letters.map_err(String::from),
        keys,
        flows: flows.map_err(String::from),
        retries_cap: seen.retries_cap,
        pin_error: seen.pin_error,
    }))
}

async fn signing_keys(state: &AppState, q: &QStash) -> Result<KeyCheck, ApiFailure> {
    let url = api_url(&q.config.url, &["v2", "keys"], &[]);
    let answer = qstash_call(state, q, reqwest::Method::GET, &url).await?;
    let keys: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    Ok(compare_keys(
        &q.config,
        keys["current"].as_str().unwrap_or_default(),
        keys["next"].as_str().unwrap_or_default(),
    ))
}

async fn dead_letters(
    state: &AppState,
    q: &QStash,
    install: &str,
) -> Result<(usize, bool), ApiFailure> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..DLQ_PAGES {
        let mut query = vec![
            ("count", "100".to_owned()),
            ("label", install_label(install)),
        ];
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let url = api_url(&q.config.url, &["v2", "dlq"], &query);
        let answer = qstash_call(state, q, reqwest::Method::GET, &url).await?;
        let page: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        count += page["messages"].as_array().map_or(0, Vec::len);
        cursor = page["cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok((count, false));
        }
    }
    Ok((count, true))
}

async fn flows(state: &AppState, q: &QStash, install: &str) -> Result<Vec<FlowStatus>, ApiFailure> {
    let mut flows = Vec::new();
    for kind in KINDS {
        let key = flow_control_key(install, kind);
        let url = api_url(&q.config.url, &["v2", "flowControl", &key], &[]);
        let answer = match qstash_call(state, q, reqwest::Method::GET, &url).await {
            Ok(answer) => answer,
            // Nothing of this kind published or pinned yet.
            Err(ApiFailure::Status(StatusCode::NOT_FOUND, _)) => continue,
            Err(e) => return Err(e),
        };
        let flow: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        flows.push(FlowStatus {
            kind,
            wait_list: flow["waitListSize"].as_i64().unwrap_or(0),
            parallelism: flow["parallelismMax"].as_i64().filter(|p| *p > 0),
            rate: flow["rateMax"]
                .as_i64()
                .filter(|r| *r > 0)
                .zip(flow["ratePeriod"].as_i64().filter(|p| *p > 0)),
        });
    }
    Ok(flows)
}

/// The configured signing keys against the account's.
fn compare_keys(config: &QStashConfig, current: &str, next: &str) -> KeyCheck {
    let configured_next = config.next_key.as_ref().map(|k| k.expose_secret());
    if current.is_empty() {
        KeyCheck::Unknown
    } else if current == config.current_key.expose_secret() {
        match configured_next {
            None => KeyCheck::NoNextKey,
            Some(n) if n == next => KeyCheck::Match,
            Some(_) => KeyCheck::WrongNext,
        }
    } else if configured_next == Some(current) {
        KeyCheck::Rolled
    } else {
        KeyCheck::Mismatch
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
    /// Where QStash keeps the message in its dead-letter queue.
    #[serde(default)]
    dlq_id: Option<String>,
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
    // The body names the task; should QStash ever redact it here too, the outbox knows
    // which task each message was published for.
    let task_id = match decode(&failure.source_body)
        .and_then(|text| serde_json::from_str::<Delivery>(&text).ok())
    {
        Some(delivery) => Some(delivery.task_id),
        None => match task_of_message(&state, failure.source_message_id.as_deref()).await {
            Ok(task) => task,
            Err(e) => return again(Duration::from_secs(5), &e.message),
        },
    };
    let Some(task_id) = task_id else {
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
    // The last try reached no CREVID server (no answer at all, or a proxy's 502/504 in
    // front of one that was down): the task is not at fault. It is left as it is; once
    // its lease has run out the relay publishes it again (`republish_stalled`), and fails
    // it only after `UNDELIVERED_MESSAGES` messages no delivery reached.
    let unanswered = matches!(failure.status, None | Some(0) | Some(502) | Some(504));
    let outcome = if unanswered {
        tracing::warn!(task_id, %message, "QStash gave up on a message no server answered; the relay publishes the task again");
        "left for the relay: no server answered"
    } else {
        if let Err(e) = mark_failed(
            &state,
            task_id,
            failure.source_message_id.as_deref(),
            &message,
        )
        .await
        {
            return again(Duration::from_secs(5), &e.message);
        }
        "recorded"
    };
    if let (Some(q), Some(dlq_id)) = (&state.qstash, failure.dlq_id.as_deref()) {
        if !q.config.keep_dead_letters && !dlq_id.is_empty() {
            delete_dead_letter(&state, q, dlq_id).await;
        }
    }
    answer(StatusCode::OK, outcome)
}

/// The task a published message was for, from the outbox.
async fn task_of_message(
    state: &AppState,
    message_id: Option<&str>,
) -> Result<Option<i64>, AppError> {
    let Some(id) = message_id.filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    sqlx::query_scalar("SELECT task_id FROM outbox WHERE message_id = $1 LIMIT 1")
        .bind(id)
        .fetch_optional(state.pool())
        .await
        .db("finding the task of a message")
}

/// Deletes a message QStash gave up on from its dead-letter queue once the task records
/// the failure (`DELETE /v2/dlq/{dlqId}`): the task keeps the reason, and the DLQ keeps
/// only what nobody has seen. Done before the callback is answered (QStash waits for the
/// answer as long as `Upstash-Timeout`), so a retried callback finds it gone: a 404. A
/// failed delete leaves it there, and the status page counts it.
async fn delete_dead_letter(state: &AppState, q: &QStash, dlq_id: &str) {
    let url = api_url(&q.config.url, &["v2", "dlq", dlq_id], &[]);
    match qstash_call(state, q, reqwest::Method::DELETE, &url).await {
        Ok(_) | Err(ApiFailure::Status(StatusCode::NOT_FOUND, _)) => {
            tracing::debug!(dlq_id, "deleted a recorded failure from QStash's DLQ")
        }
        Err(error) => {
            tracing::warn!(%error, dlq_id, "could not delete a message from QStash's DLQ")
        }
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
        super::jobs::refresh_in(state, &mut tx, job).await?;
    }
    tx.commit().await.db("failing a task")?;
    super::webhooks::wake(state);
    state.work.notify_waiters();
    Ok(())
}

/// With QStash, how long a delivery of `kind` may work before it is stopped
/// ([`deadline`]); None on the embedded queue.
pub fn delivery_limit(state: &AppState, kind: &str) -> Option<Duration> {
    state.qstash.as_ref().map(|q| deadline(&q.config, kind))
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
        assert_eq!(route_of(WEBHOOK_DELIVERY, true), WEBHOOK_ROUTE);
    }

    #[test]
    fn labels_name_the_installation_the_job_and_the_kind() {
        assert_eq!(
            labels("0a1b", 42, SCENE_IMAGE),
            "crevid-0a1b,crevid-0a1b-job-42,crevid-0a1b-scene-image"
        );
        assert_eq!(job_label("0a1b", 42), "crevid-0a1b-job-42");
    }

    #[test]
    fn the_retry_delay_is_the_embedded_backoff() {
        assert_eq!(
            retry_delay(1000),
            "max(min(300000, 1000 * pow(2, retried + 1)), 1000 * exp(2.5 * (retried - 3)))"
        );
    }

    #[test]
    fn refused_retries_step_down_to_what_the_plan_allows() {
        let refusal = "invalid Upstash-Retries 8: your plan allows at most 3 retries";
        assert!(refuses_retries(StatusCode::BAD_REQUEST, refusal));
        assert!(!refuses_retries(
            StatusCode::BAD_REQUEST,
            "invalid Upstash-Timeout"
        ));
        assert!(!refuses_retries(StatusCode::UNAUTHORIZED, refusal));
        // A 400 about retries that speaks of no limit is not the plan's.
        assert!(!refuses_retries(
            StatusCode::BAD_REQUEST,
            "invalid Upstash-Retries \"x\": not a number"
        ));
        assert!(refuses_retries(
            StatusCode::BAD_REQUEST,
            "maxRetries exceeds the limit of your plan"
        ));
        assert_eq!(lower_retries(refusal, 8), 3);
        // A number at or above what was tried is not the plan's maximum.
        assert_eq!(lower_retries("maxRetries 8 is above the limit", 8), 5);
        assert_eq!(lower_retries("too many retries", 30), 20);
        assert_eq!(lower_retries("too many retries", 5), 3);
        assert_eq!(lower_retries("too many retries", 3), 0);
    }

    fn config(next: Option<&str>) -> QStashConfig {
        QStashConfig::new(
            "http://127.0.0.1:8080",
            "token".into(),
            "sig_current".into(),
            next.map(str::to_owned),
            (3, Duration::from_secs(300), Duration::from_secs(5)),
        )
    }

    #[test]
    fn signing_keys_are_compared_with_the_account() {
        let both = config(Some("sig_next"));
        assert_eq!(
            compare_keys(&both, "sig_current", "sig_next"),
            KeyCheck::Match
        );
        assert_eq!(
            compare_keys(&both, "sig_next", "sig_newer"),
            KeyCheck::Rolled
        );
        assert_eq!(
            compare_keys(&both, "sig_other", "sig_next"),
            KeyCheck::Mismatch
        );
        assert_eq!(
            compare_keys(&both, "sig_current", "sig_other"),
            KeyCheck::WrongNext
        );
        assert_eq!(compare_keys(&both, "", ""), KeyCheck::Unknown);
        let current_only = config(None);
        assert_eq!(
            compare_keys(&current_only, "sig_current", "sig_next"),
            KeyCheck::NoNextKey
        );
        assert_eq!(
            compare_keys(&current_only, "sig_next", "sig_newer"),
            KeyCheck::Mismatch
        );
    }

    #[test]
    fn only_what_differs_is_pinned() {
        let want = FlowLimits {
            parallelism: 2,
            rate: Some((10, 60)),
        };
        let pinned = serde_json::json!({
            "isPinnedParallelism": true, "parallelismMax": 4,
            "isPinnedRate": true, "rateMax": 10, "ratePeriod": 60,
        });
        // The parallelism changed, the rate did not: the rate's period is not restarted.
        assert_eq!(
            pin_change(Some(&pinned), want),
            PinChange {
                pin: vec![("parallelism", "2".to_owned())],
                unpin_rate: false
            }
        );
        let same = serde_json::json!({
            "isPinnedParallelism": true, "parallelismMax": 2,
            "isPinnedRate": true, "rateMax": 10, "ratePeriod": 60,
        });
        assert!(pin_change(Some(&same), want).pin.is_empty());
        // A new key: everything is pinned.
        assert_eq!(pin_change(None, want).pin.len(), 3);
        // The rate limit was removed: its pin goes.
        let open = FlowLimits {
            parallelism: 2,
            rate: None,
        };
        assert_eq!(
            pin_change(Some(&same), open),
            PinChange {
                pin: Vec::new(),
                unpin_rate: true
            }
        );
    }

    #[test]
    fn flow_control_values() {
        let limited = FlowLimits {
            parallelism: 2,
            rate: Some((10, 60)),
        };
        assert_eq!(limited.value(), "parallelism=2, rate=10, period=60s");
        let open = FlowLimits {
            parallelism: 4,
            rate: None,
        };
        assert_eq!(open.value(), "parallelism=4");
    }
}
