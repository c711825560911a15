//! Webhooks, as the Standard Webhooks specification describes them
//! (<https://www.standardwebhooks.com>, spec v1): a user registers endpoints for events;
//! each event becomes one delivery per endpoint, a JSON body
//! `{"type", "timestamp", "data"}` sent with the headers `webhook-id`, `webhook-timestamp`
//! (Unix seconds) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the endpoint's secret).
//!
//! A delivery is a task of a `webhook` job, queued in the transaction that records the
//! event, so it is sent by the embedded workers or through QStash like any other task,
//! with the queue's retries and exponential backoff (a 429 or 503's `Retry-After` is
//! honoured), and survives a restart. The target obeys `outbound`'s rules: http(s), public
//! addresses only unless the admin allows the range, the address pinned, no redirects.
//!
//! Rotating a secret keeps the previous one signing too for [`ROTATION_GRACE_MS`], so a
//! receiver can switch over: the header then carries both signatures, space-separated, as
//! the specification allows.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::Row;

use super::auth::CurrentUser;
use super::db::{format_ms, now_ms};
use super::engine::{ClaimedTask, Output, TaskError};
use super::error::DbResultExt;
use super::jobs::{WEBHOOK_DELIVERY, WEBHOOK_JOB};
use super::state::AppState;
use super::validate;
use crate::error::{AppError, ErrorCode};
use crate::model::{
    limits, CreateWebhookRequest, UpdateWebhookRequest, WebhookDeliveryView, WebhookEndpointView,
    WebhookEvent, WebhookWithSecret,
};

/// Standard Webhooks' secret prefix; the rest is the base64 of the key's bytes.
const SECRET_PREFIX: &str = "whsec_";
/// How long the secret before a rotation keeps signing: a day, as Svix keeps it.
pub const ROTATION_GRACE_MS: i64 = 24 * 3600 * 1000;
/// How long one attempt waits for the receiver's answer. Standard Webhooks asks receivers
/// to answer at once and do their work afterwards.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per delivery (and per redelivery); the waits between them are the queue's
/// backoff (`CREVID_RETRY_BASE_MS` × 2^attempt, at most 5 minutes).
pub const MAX_ATTEMPTS: i64 = 8;
/// Deliveries listed per endpoint, newest first.
pub const DELIVERIES_LISTED: i64 = 50;
/// How much of a receiver's refusal is kept to show.
const ANSWER_SHOWN_CHARS: usize = 200;

type HmacSha256 = Hmac<Sha256>;

const ENDPOINT_COLUMNS: &str =
    "id, url, description, events, enabled, created_at, previous_expires_at";

fn endpoint_view(row: &sqlx::any::AnyRow) -> Result<WebhookEndpointView, sqlx::Error> {
    let events: String = row.try_get("events")?;
    let previous: Option<i64> = row.try_get("previous_expires_at")?;
    Ok(WebhookEndpointView {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: format_ms(row.try_get("created_at")?),
        previous_secret_expires_at: previous.filter(|at| *at > now_ms()).map(format_ms),
    })
}

/// A new secret: 32 random bytes, as `whsec_` and base64.
fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value for one secret: `v1,` and the base64 of
/// HMAC-SHA256(key, "{id}.{timestamp}.{body}"), the key being the secret's base64 part.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).ok()?;
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The outbound rules for a user's endpoint: public addresses, or the admin's ranges.
async fn rules(state: &AppState) -> Result<super::outbound::Rules<'static>, AppError> {
    let (settings, _) = super::settings::for_tasks(state).await?;
    Ok(super::outbound::Rules::new(
        "the webhook URL",
        None,
        &settings.allowed_private_addresses,
    ))
}

/// The URL as given, if it is http(s) with a host that may be reached now.
async fn checked_url(state: &AppState, raw: &str) -> Result<String, AppError> {
    let url = validate::text("url", raw, 1, limits::WEBHOOK_URL_MAX_CHARS)?;
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => {
            return Err(AppError::validation(
                "url",
                "url must be an http:// or https:// URL",
            ))
        }
        Err(e) => {
            return Err(AppError::validation(
                "url",
                format!("url is not a valid URL: {e}"),
            ))
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    super::outbound::check(&url, &rules(state).await?, deadline)
        .await
        .map_err(|e| {
            let message = e.message();
            AppError::validation(
                "url",
                if message.contains("private address") {
                    format!("{message} (an admin can allow the range: allowed_private_addresses in Settings)")
                } else {
                    message.to_owned()
                },
            )
        })?;
    Ok(url)
}

fn events_json(events: Option<Vec<WebhookEvent>>) -> Result<String, AppError> {
    let mut events = events.unwrap_or_else(|| WebhookEvent::ALL.to_vec());
    if events.is_empty() {
        return Err(AppError::validation(
            "events",
            "events must name at least one event (or be left out for all of them)",
        ));
    }
    events.sort_by_key(|e| WebhookEvent::ALL.iter().position(|a| a == e));
    events.dedup();
    serde_json::to_string(&events).map_err(|e| super::error::internal("encoding events", e))
}

fn description(raw: Option<&str>) -> Result<String, AppError> {
    match raw.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => validate::text("description", d, 1, limits::WEBHOOK_DESCRIPTION_MAX_CHARS),
        None => Ok(String::new()),
    }
}

/// The caller's endpoints, oldest first.
pub async fn list(
    state: &AppState,
    user: &CurrentUser,
) -> Result<Vec<WebhookEndpointView>, AppError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner_id = $1 ORDER BY id"
    ))
    .bind(user.id)
    .fetch_all(state.pool())
    .await
    .db("listing webhooks")?;
    rows.iter()
        .map(endpoint_view)
        .collect::<Result<_, _>>()
        .db("decoding webhooks")
}

/// One of the caller's endpoints; 404 for anyone else's (admins included: an endpoint
/// and its secret are its owner's alone).
pub async fn get(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
) -> Result<WebhookEndpointView, AppError> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND owner_id = $2"
    ))
    .bind(id)
    .bind(user.id)
    .fetch_optional(state.pool())
    .await
    .db("reading a webhook")?
    .ok_or_else(|| AppError::not_found("webhook"))?;
    endpoint_view(&row).db("decoding a webhook")
}

fn too_many() -> AppError {
    AppError::new(
        ErrorCode::Conflict,
        format!(
            "an account may have {} webhook endpoints; delete one first",
            limits::WEBHOOKS_PER_USER
        ),
    )
}

/// Registers an endpoint; its secret is in the answer.
pub async fn create(
    state: &AppState,
    user: &CurrentUser,
    req: CreateWebhookRequest,
) -> Result<WebhookWithSecret, AppError> {
    let events = events_json(req.events)?;
    let description = description(req.description.as_deref())?;
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE owner_id = $1")
            .bind(user.id)
            .fetch_one(state.pool())
            .await
            .db("counting webhooks")?;
    if count >= limits::WEBHOOKS_PER_USER {
        return Err(too_many());
    }
    // Last: it may look the host up.
    let url = checked_url(state, &req.url).await?;
    let secret = new_secret();
    let now = now_ms();
    // The count above answers the common case with its number; this one holds under
    // concurrent requests: SQLite runs the statement alone, Postgres takes the user's lock.
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    if state.db.backend == super::db::Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('crevid.webhooks.' || $1))")
            .bind(user.id.to_string())
            .execute(&mut *tx)
            .await
            .db("locking webhooks")?;
    }
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (owner_id, url, description, events, secret, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, $6 \
         WHERE (SELECT COUNT(*) FROM webhook_endpoints WHERE owner_id = $1) < $7 RETURNING id",
    )
    .bind(user.id)
    .bind(&url)
    .bind(&description)
    .bind(&events)
    .bind(state.secrets.seal(&secret))
    .bind(now)
    .bind(limits::WEBHOOKS_PER_USER)
    .fetch_optional(&mut *tx)
    .await
    .db("creating a webhook")?;
    tx.commit().await.db("creating a webhook")?;
    let Some(id) = id else {
        return Err(too_many());
    };
    Ok(WebhookWithSecret {
        endpoint: get(state, user, id).await?,
        secret,
    })
}

/// Changes what `req` names; the rest stays.
pub async fn update(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
    req: UpdateWebhookRequest,
) -> Result<WebhookEndpointView, AppError> {
    get(state, user, id).await?;
    let url = match req.url.as_deref() {
        Some(url) => Some(checked_url(state, url).await?),
        None => None,
    };
    let events = match req.events {
        Some(events) => Some(events_json(Some(events))?),
        None => None,
    };
    let description = match req.description.as_deref() {
        Some(d) => Some(description(Some(d))?),
        None => None,
    };
    sqlx::query(
        "UPDATE webhook_endpoints SET url = COALESCE($1, url), events = COALESCE($2, events), \
         description = COALESCE($3, description), enabled = COALESCE($4, enabled), updated_at = $5 \
         WHERE id = $6 AND owner_id = $7",
    )
    .bind(url)
    .bind(events)
    .bind(description)
    .bind(req.enabled.map(i64::from))
    .bind(now_ms())
    .bind(id)
    .bind(user.id)
    .execute(state.pool())
    .await
    .db("updating a webhook")?;
    get(state, user, id).await
}

/// Deletes an endpoint and its deliveries; deliveries still queued are not sent.
pub async fn delete(state: &AppState, user: &CurrentUser, id: i64) -> Result<(), AppError> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND owner_id = $2")
        .bind(id)
        .bind(user.id)
        .execute(state.pool())
        .await
        .db("deleting a webhook")?;
    if done.rows_affected() == 0 {
        return Err(AppError::not_found("webhook"));
    }
    Ok(())
}

/// A new secret; the current one keeps signing too for [`ROTATION_GRACE_MS`].
pub async fn rotate_secret(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
) -> Result<WebhookWithSecret, AppError> {
    get(state, user, id).await?;
    let secret = new_secret();
    let now = now_ms();
    sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = $1, secret = $2, updated_at = $3 \
         WHERE id = $4 AND owner_id = $5",
    )
    .bind(now + ROTATION_GRACE_MS)
    .bind(state.secrets.seal(&secret))
    .bind(now)
    .bind(id)
    .bind(user.id)
    .execute(state.pool())
    .await
    .db("rotating a webhook secret")?;
    Ok(WebhookWithSecret {
        endpoint: get(state, user, id).await?,
        secret,
    })
}

/// A delivery's status: one whose task is queued or running is pending; else it
/// succeeded when an attempt got a 2xx, and failed when its task ended without one (no
/// attempt left, cancelled, or gone).
const DELIVERY_COLUMNS: &str =
    "d.id, d.message_id, d.event, d.payload, d.attempts, d.response_status, d.last_error, \
     d.created_at, d.delivered_at, CASE WHEN t.status IN ('queued', 'running') THEN 'pending' \
     WHEN d.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END AS shown_status";

fn delivery_view(row: &sqlx::any::AnyRow) -> Result<WebhookDeliveryView, sqlx::Error> {
    let event: String = row.try_get("event")?;
    Ok(WebhookDeliveryView {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        event: WebhookEvent::parse(&event).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown webhook event {event:?}").into())
        })?,
        status: row.try_get("shown_status")?,
        attempts: row.try_get("attempts")?,
        response_status: row.try_get("response_status")?,
        last_error: row.try_get("last_error")?,
        created_at: format_ms(row.try_get("created_at")?),
        delivered_at: row
            .try_get::<Option<i64>, _>("delivered_at")?
            .map(format_ms),
        payload: row.try_get("payload")?,
    })
}

/// The endpoint's latest [`DELIVERIES_LISTED`] deliveries, newest first.
pub async fn deliveries(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
) -> Result<Vec<WebhookDeliveryView>, AppError> {
    get(state, user, id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d LEFT JOIN tasks t ON t.id = d.task_id \
         WHERE d.endpoint_id = $1 ORDER BY d.id DESC LIMIT $2"
    ))
    .bind(id)
    .bind(DELIVERIES_LISTED)
    .fetch_all(state.pool())
    .await
    .db("listing deliveries")?;
    rows.iter()
        .map(delivery_view)
        .collect::<Result<_, _>>()
        .db("decoding deliveries")
}

async fn delivery(
    state: &AppState,
    endpoint_id: i64,
    id: i64,
) -> Result<WebhookDeliveryView, AppError> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d LEFT JOIN tasks t ON t.id = d.task_id \
         WHERE d.id = $1 AND d.endpoint_id = $2"
    ))
    .bind(id)
    .bind(endpoint_id)
    .fetch_optional(state.pool())
    .await
    .db("reading a delivery")?
    .ok_or_else(|| AppError::not_found("delivery"))?;
    delivery_view(&row).db("decoding a delivery")
}

/// Sends a delivery again, with the same `webhook-id` (receivers deduplicate on it) and
/// body, signed anew. 409 while it is still pending.
pub async fn redeliver(
    state: &AppState,
    user: &CurrentUser,
    endpoint_id: i64,
    id: i64,
) -> Result<WebhookDeliveryView, AppError> {
    let endpoint = get(state, user, endpoint_id).await?;
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT task_id FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2",
    )
    .bind(id)
    .bind(endpoint_id)
    .fetch_optional(state.pool())
    .await
    .db("reading a delivery")?
    .ok_or_else(|| AppError::not_found("delivery"))?;
    if !endpoint.enabled {
        return Err(AppError::new(
            ErrorCode::Conflict,
            "this endpoint is disabled; enable it before redelivering",
        ));
    }
    super::jobs::check_rate(state, user).await?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let task_id = queue_task(state, &mut tx, user.id).await?;
    // Taken over only from the task read above, and only when that one has ended: of two
    // Redeliver clicks at once, one queues a task and the other is refused.
    let taken = sqlx::query(
        "UPDATE webhook_deliveries SET task_id = $1, status = 'pending', response_status = NULL, last_error = NULL, \
         delivered_at = NULL, updated_at = $2 \
         WHERE id = $3 AND COALESCE(task_id, 0) = $4 AND NOT EXISTS (SELECT 1 FROM tasks t \
           WHERE t.id = webhook_deliveries.task_id AND t.status IN ('queued', 'running'))",
    )
    .bind(task_id)
    .bind(now_ms())
    .bind(id)
    .bind(current.unwrap_or(0))
    .execute(&mut *tx)
    .await
    .db("redelivering")?
    .rows_affected();
    if taken == 0 {
        return Err(AppError::new(
            ErrorCode::Conflict,
            "this delivery is still being sent; redeliver it once it has succeeded or failed",
        ));
    }
    tx.commit().await.db("redelivering")?;
    wake(state);
    delivery(state, endpoint_id, id).await
}

// ---------------------------------------------------------------------------------------
// Events

/// Queues `job.completed` or `job.failed` for the job's owner, and `video.ready` when a
/// render completed, in the caller's transaction (`jobs::refresh_in`, right after it
/// wrote the job's new status).
pub async fn job_finished(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
) -> Result<(), AppError> {
    let owner: Option<Option<i64>> = sqlx::query_scalar("SELECT owner_id FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await
        .db("reading a job's owner")?;
    let Some(owner) = owner.flatten() else {
        return Ok(());
    };
    let listeners = listeners(tx, owner).await?;
    if listeners.is_empty() {
        return Ok(());
    }
    let job = super::jobs::view_in(tx, job_id)
        .await?
        .ok_or_else(AppError::internal)?;
    let event = if job.status == "completed" {
        WebhookEvent::JobCompleted
    } else {
        WebhookEvent::JobFailed
    };
    let data =
        serde_json::to_value(&job).map_err(|e| super::error::internal("encoding a job", e))?;
    emit(state, tx, (owner, &listeners), event, data).await?;
    if job.kind == crate::model::JobKind::Render.as_str() && job.status == "completed" {
        if let Some(content_id) = job.content_id {
            let duration: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT a.duration_ms FROM contents c JOIN assets a ON a.id = c.video_asset_id WHERE c.id = $1",
            )
            .bind(content_id)
            .fetch_optional(&mut **tx)
            .await
            .db("reading a video")?;
            let path = format!("/api/contents/{content_id}/video");
            let data = serde_json::json!({
                "content_id": content_id,
                "job_id": job_id,
                "title": job.content_title,
                "video_url": match &state.public_origin {
                    Some(origin) => format!("{origin}{path}"),
                    None => path,
                },
                "duration_ms": duration.flatten(),
            });
            emit(
                state,
                tx,
                (owner, &listeners),
                WebhookEvent::VideoReady,
                data,
            )
            .await?;
        }
    }
    Ok(())
}

/// Queues `content.deleted` for the content's owner, in the deleting transaction.
pub async fn content_deleted(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: i64,
    content_id: i64,
    title: &str,
) -> Result<(), AppError> {
    let listeners = listeners(tx, owner).await?;
    let data = serde_json::json!({ "content_id": content_id, "title": title });
    emit(
        state,
        tx,
        (owner, &listeners),
        WebhookEvent::ContentDeleted,
        data,
    )
    .await
}

/// The owner's enabled endpoints (none for a disabled account) and the events each
/// wants, read once per change: most users have none, and an event then costs this query.
async fn listeners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: i64,
) -> Result<Vec<(i64, Vec<WebhookEvent>)>, AppError> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT e.id, e.events FROM webhook_endpoints e JOIN users u ON u.id = e.owner_id \
         WHERE e.owner_id = $1 AND e.enabled = 1 AND u.disabled_at IS NULL ORDER BY e.id",
    )
    .bind(owner)
    .fetch_all(&mut **tx)
    .await
    .db("reading webhooks")?;
    Ok(rows
        .into_iter()
        .map(|(id, events)| (id, serde_json::from_str(&events).unwrap_or_default()))
        .collect())
}

/// One delivery, with its task, for each of `listeners` that wants `event`. The body is
/// fixed here, so every attempt and redelivery sends the same bytes.
async fn emit(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    (owner, listeners): (i64, &[(i64, Vec<WebhookEvent>)]),
    event: WebhookEvent,
    data: serde_json::Value,
) -> Result<(), AppError> {
    let now = now_ms();
    let payload = serde_json::json!({
        "type": event.as_str(),
        "timestamp": super::db::rfc3339(now),
        "data": data,
    })
    .to_string();
    for (endpoint_id, wanted) in listeners {
        if !wanted.contains(&event) {
            continue;
        }
        let task_id = queue_task(state, tx, owner).await?;
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, message_id, event, payload, task_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(endpoint_id)
        .bind(format!("msg_{}", URL_SAFE_NO_PAD.encode(id)))
        .bind(event.as_str())
        .bind(&payload)
        .bind(task_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .db("recording a delivery")?;
    }
    Ok(())
}

/// A `webhook` job of one task for the owner, published (QStash) with the transaction.
async fn queue_task(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: i64,
) -> Result<i64, AppError> {
    let now = now_ms();
    let job_id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (owner_id, kind, status, stage, stage_message, total_tasks, created_at, updated_at) \
         VALUES ($1, $2, 'queued', 'queued', 'Waiting to send', 1, $3, $3) RETURNING id",
    )
    .bind(owner)
    .bind(WEBHOOK_JOB)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .db("queueing a delivery")?;
    let task_id: i64 = sqlx::query_scalar(
        "INSERT INTO tasks (job_id, kind, max_attempts, run_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4, $4) RETURNING id",
    )
    .bind(job_id)
    .bind(WEBHOOK_DELIVERY)
    .bind(MAX_ATTEMPTS)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .db("queueing a delivery")?;
    super::engine::announce(state, tx, WEBHOOK_DELIVERY).await?;
    super::qstash::enqueue_tasks(state, tx, &[task_id]).await?;
    Ok(task_id)
}

/// After a transaction that may have queued deliveries committed: this process's
/// delivery workers look now, and the QStash relay publishes.
pub fn wake(state: &AppState) {
    super::engine::wake_here(state, WEBHOOK_DELIVERY);
    super::qstash::nudge(state);
}

// ---------------------------------------------------------------------------------------
// Sending

/// The `webhook.deliver` task: one attempt to send the delivery its task names.
pub async fn deliver(state: &AppState, task: &ClaimedTask) -> Result<Output, TaskError> {
    let fault = |e: AppError| TaskError::Server {
        message: "the delivery could not be read".into(),
        detail: e.message,
        transient: true,
    };
    let row = sqlx::query(
        "SELECT d.id, d.message_id, d.payload, e.url, e.secret, e.previous_secret, e.previous_expires_at, \
         CASE WHEN e.enabled = 1 AND u.disabled_at IS NULL THEN 1 ELSE 0 END AS sending, \
         CASE WHEN u.disabled_at IS NULL THEN 'the webhook endpoint is disabled' \
           ELSE 'the webhook endpoint''s account is disabled' END AS why_not \
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         JOIN users u ON u.id = e.owner_id WHERE d.task_id = $1",
    )
    .bind(task.id)
    .fetch_optional(state.pool())
    .await
    .db("reading a delivery")
    .map_err(fault)?;
    // The endpoint was deleted with its deliveries, or a redelivery took the delivery
    // over: nothing is left for this task to send.
    let Some(row) = row else {
        return Ok(Output::recorded(None));
    };
    let field = |e: sqlx::Error| fault(super::error::internal("reading a delivery", e));
    let delivery_id: i64 = row.try_get("id").map_err(field)?;
    let message_id: String = row.try_get("message_id").map_err(field)?;
    let body: String = row.try_get("payload").map_err(field)?;
    let url: String = row.try_get("url").map_err(field)?;
    if row.try_get::<i64, _>("sending").map_err(field)? == 0 {
        let refused = TaskError::Permanent(row.try_get("why_not").map_err(field)?);
        record(state, task, delivery_id, None, Err(&refused), true, false).await?;
        return Err(refused);
    }
    let mut secrets = vec![row.try_get::<String, _>("secret").map_err(field)?];
    let previous: Option<String> = row.try_get("previous_secret").map_err(field)?;
    let until: Option<i64> = row.try_get("previous_expires_at").map_err(field)?;
    if let (Some(previous), Some(until)) = (previous, until) {
        if until > now_ms() {
            secrets.push(previous);
        }
    }
    let timestamp = now_ms() / 1000;
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|sealed| state.secrets.open(sealed))
        .filter_map(|secret| sign(&secret, &message_id, timestamp, &body))
        .collect();
    if signatures.is_empty() {
        return Err(TaskError::Server {
            message: "the webhook's secret could not be read".into(),
            detail: "the sealed secret does not open with this server's key (CREVID_SECRET_KEY changed?)".into(),
            transient: false,
        });
    }
    let mut headers = reqwest::header::HeaderMap::new();
    let mut header = |name: &'static str, value: &str| {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    header("content-type", "application/json");
    header("webhook-id", &message_id);
    header("webhook-timestamp", &timestamp.to_string());
    header("webhook-signature", &signatures.join(" "));
    let rules = rules(state).await.map_err(fault)?;
    // Under QStash the attempt ends a moment before the delivery would be cut off, so its
    // outcome is recorded and retried like any other.
    let timeout =
        super::qstash::delivery_limit(state, WEBHOOK_DELIVERY).map_or(ATTEMPT_TIMEOUT, |limit| {
            limit
                .saturating_sub(Duration::from_secs(1))
                .min(ATTEMPT_TIMEOUT)
        });
    let deadline = tokio::time::Instant::now() + timeout;
    let (status, outcome) = match super::outbound::post(&url, &rules, deadline, headers, body).await
    {
        Ok(response) if response.status().is_success() => {
            (Some(response.status().as_u16()), Ok(()))
        }
        Ok(response) => {
            let status = response.status();
            // A receiver asking to wait (429, 503) is given the wait it asks for.
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| super::openai::retry_after(response.headers()))
                .flatten();
            let said = answer_start(response, deadline).await;
            let message = if said.is_empty() {
                format!("the webhook URL answered {status}")
            } else {
                format!("the webhook URL answered {status}: {said}")
            };
            (
                Some(status.as_u16()),
                Err(TaskError::Transient {
                    message,
                    retry_after,
                }),
            )
        }
        Err(error) => (None, Err(error)),
    };
    // A URL refused for what it is (a private address, another scheme) is no attempt to
    // send; a failed lookup or connection is one.
    let refused = outcome.as_ref().is_err_and(|e| !e.is_transient());
    let last = task.attempt >= task.max_attempts || refused;
    record(
        state,
        task,
        delivery_id,
        status,
        outcome.as_ref(),
        last,
        !refused,
    )
    .await?;
    outcome.map(|()| Output::recorded(None))
}

/// The first [`ANSWER_SHOWN_CHARS`] characters of a refusal's body, reading no more than
/// a few KiB of it: a receiver's answer is shown, never held whole.
async fn answer_start(mut response: reqwest::Response, deadline: tokio::time::Instant) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_SHOWN_CHARS * 4 {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    shown(&bytes)
}

/// A receiver's words as they may be shown on a page and written to the log: control
/// characters (terminal escapes) and bidirectional overrides become spaces, runs of spaces
/// one, at most [`ANSWER_SHOWN_CHARS`] characters.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                ' '
            } else {
                c
            }
        })
        .collect();
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ANSWER_SHOWN_CHARS)
        .collect()
}

/// Writes one attempt's outcome on the delivery, if this run still holds the task (a run
/// whose lease was taken over, or whose delivery was redelivered meanwhile, writes
/// nothing). `last`: no attempt follows a failure, so the delivery has failed. `tried`:
/// a request was sent (answered or not), so it counts as an attempt and its answer's
/// status replaces the last one.
async fn record(
    state: &AppState,
    task: &ClaimedTask,
    delivery_id: i64,
    status: Option<u16>,
    outcome: Result<&(), &TaskError>,
    last: bool,
    tried: bool,
) -> Result<(), TaskError> {
    let now = now_ms();
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + $9, \
         response_status = CASE WHEN $9 = 1 THEN $1 ELSE response_status END, last_error = $2, \
         status = $3, delivered_at = CASE WHEN $3 = 'succeeded' THEN $4 ELSE delivered_at END, updated_at = $4 \
         WHERE id = $5 AND task_id = $6 AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = $6 AND t.worker_id = $7 \
           AND t.attempt = $8 AND t.status = 'running')",
    )
    .bind(status.map(i64::from))
    .bind(outcome.err().map(|e| e.message().to_owned()))
    .bind(match (outcome, last) {
        (Ok(_), _) => "succeeded",
        (Err(_), true) => "failed",
        (Err(_), false) => "pending",
    })
    .bind(now)
    .bind(delivery_id)
    .bind(task.id)
    .bind(&*state.worker_id)
    .bind(task.attempt)
    .bind(i64::from(tried))
    .execute(state.pool())
    .await
    .map(drop)
    .map_err(|e| TaskError::Server {
        message: "the delivery's outcome could not be recorded".into(),
        detail: super::error::internal("recording a delivery", e).message,
        transient: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_specification_does() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, timestamp, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn a_receiver_s_words_are_shown_without_escapes() {
        let answer = b"\n\n    <html>\x1b[31mred\x00nul \xe2\x80\xae turned \xff end";
        assert_eq!(shown(answer), "<html> [31mred nul turned \u{fffd} end");
        assert_eq!(shown(&[b' '; 500]), "");
        assert_eq!(shown(&[b'x'; 500]).chars().count(), ANSWER_SHOWN_CHARS);
    }

    #[test]
    fn a_secret_is_prefixed_base64_of_32_bytes() {
        let secret = new_secret();
        let key = STANDARD
            .decode(secret.strip_prefix(SECRET_PREFIX).expect("prefixed"))
            .expect("base64");
        assert_eq!(key.len(), 32);
        assert_ne!(secret, new_secret());
    }
}
