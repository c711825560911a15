//! Jobs and their tasks: creating them (job and tasks in one transaction), reading them
//! scoped to their owner, cancelling and retrying. Running them is `engine`'s work.

use sqlx::Row;

use super::auth::CurrentUser;
use super::db::{format_ms, now_ms};
use super::error::DbResultExt;
use super::state::AppState;
use crate::error::AppError;
use crate::model::{
    BatchRequest, ContentDetail, JobDetail, JobFilter, JobKind, JobView, MediaRequest, TaskView,
    BATCH_CONTENTS_MAX, JOB_STATUSES,
};

/// Stable task kind names: stored in the database, so never derived from Rust types.
pub const SCENE_IMAGE: &str = "scene.image";
pub const SCENE_AUDIO: &str = "scene.audio";
pub const RENDER: &str = "content.render";
pub const SCENE_FOOTAGE: &str = "scene.footage";
/// One webhook delivery (`webhooks`): its job has kind `webhook` and no content.
pub const WEBHOOK_DELIVERY: &str = "webhook.deliver";
/// The job kind of webhook deliveries, kept out of the creator's job list.
pub const WEBHOOK_JOB: &str = "webhook";
pub const MAX_ATTEMPTS: i64 = 5;

const JOB_COLUMNS: &str =
    "id, kind, content_id, content_ids, status, progress, stage, stage_message, error, total_tasks, \
    done_tasks, failed_tasks, created_at, started_at, completed_at, \
    (SELECT title FROM contents c WHERE c.id = jobs.content_id) AS content_title";

fn job_view(row: &sqlx::any::AnyRow) -> Result<JobView, sqlx::Error> {
    let content_ids: String = row.try_get("content_ids")?;
    Ok(JobView {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        content_id: row.try_get("content_id")?,
        status: row.try_get("status")?,
        progress: row.try_get("progress")?,
        stage: row.try_get("stage")?,
        stage_message: row.try_get("stage_message")?,
        error: row.try_get("error")?,
        total_tasks: row.try_get("total_tasks")?,
        done_tasks: row.try_get("done_tasks")?,
        failed_tasks: row.try_get("failed_tasks")?,
        created_at: format_ms(row.try_get("created_at")?),
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(format_ms),
        completed_at: row
            .try_get::<Option<i64>, _>("completed_at")?
            .map(format_ms),
        queue_ahead: None,
        content_ids: serde_json::from_str(&content_ids).unwrap_or_default(),
        content_title: row.try_get("content_title")?,
    })
}

/// A job as `GET /api/jobs/{id}` shows it, read in the caller's transaction.
pub async fn view_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
) -> Result<Option<JobView>, AppError> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .db("reading a job")?;
    row.as_ref().map(job_view).transpose().db("decoding a job")
}

fn task_kind(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Media => SCENE_IMAGE,
        JobKind::Tts => SCENE_AUDIO,
        JobKind::Render => RENDER,
        JobKind::Footage => SCENE_FOOTAGE,
    }
}

/// Queues one task per chosen scene. The scenes must belong to the content, and the
/// content to the caller (404 otherwise, as for any other id).
#[tracing::instrument(name = "jobs.create", skip_all, fields(kind = kind.as_str(), content_id = req.content_id))]
pub async fn create(
    state: &AppState,
    user: &CurrentUser,
    kind: JobKind,
    req: MediaRequest,
) -> Result<JobView, AppError> {
    if kind == JobKind::Footage {
        return Err(AppError::validation(
            "kind",
            "stock footage has its own request: use the footage route",
        ));
    }
    create_with(state, user, kind, req, serde_json::Map::new()).await
}

/// Stock footage for the chosen scenes (every scene without the creator's own visual when
/// none are named), as [`create`] does pictures; 409 when no library has a key.
pub async fn create_footage(
    state: &AppState,
    user: &CurrentUser,
    req: crate::model::FootageRequest,
) -> Result<JobView, AppError> {
    let (values, keys) = super::settings::for_tasks(state).await?;
    if super::stock::configured(&values, &keys).is_empty() {
        // Another's content is 404 before anything else, as everywhere.
        super::contents::get(state, user, req.content_id).await?;
        return Err(super::stock::not_configured());
    }
    let mut options = serde_json::Map::new();
    options.insert("stock_kind".into(), req.kind.as_str().into());
    let media = MediaRequest {
        content_id: req.content_id,
        scene_ids: req.scene_ids,
        render_after: req.render_after,
    };
    create_with(state, user, JobKind::Footage, media, options).await
}

async fn create_with(
    state: &AppState,
    user: &CurrentUser,
    kind: JobKind,
    req: MediaRequest,
    options: serde_json::Map<String, serde_json::Value>,
) -> Result<JobView, AppError> {
    // Ownership and the scene list are checked before anything is written.
    let content = super::contents::get(state, user, req.content_id).await?;
    let all: Vec<i64> = content.scenes.iter().map(|s| s.id).collect();
    let every_scene = req.scene_ids.is_none();
    let scenes = match req.scene_ids {
        None => all.clone(),
        Some(ids) if ids.is_empty() => {
            return Err(AppError::validation(
                "scene_ids",
                "scene_ids must name at least one scene (or be left out for all)",
            ))
        }
        Some(ids) => {
            if let Some((i, id)) = ids.iter().enumerate().find(|(_, id)| !all.contains(id)) {
                return Err(AppError::validation(
                    &format!("scene_ids[{i}]"),
                    format!("scene {id} is not part of content {}", req.content_id),
                ));
            }
            // A scene named twice gets one task.
            let mut seen = std::collections::HashSet::new();
            ids.into_iter().filter(|id| seen.insert(*id)).collect()
        }
    };
    if scenes.is_empty() {
        return Err(AppError::validation(
            "content_id",
            "this content has no scenes",
        ));
    }
    if kind == JobKind::Render {
        return Err(AppError::validation(
            "kind",
            "a render covers the whole content: use the render route",
        ));
    }
    fits(state, kind).await?;
    let scenes = spoken(kind, &content, scenes);
    let scenes = if every_scene {
        without_own_pictures(kind, &content, scenes)
    } else {
        scenes
    };
    if scenes.is_empty() {
        return Err(AppError::validation("scene_ids", nothing_to_make(kind)));
    }
    let tasks = scenes
        .into_iter()
        .map(|s| (req.content_id, Some(s)))
        .collect();
    super::media::check_quota(state, user, req.content_id).await?;
    check_rate(state, user).await?;
    let content_ids = [req.content_id];
    insert(
        state,
        user.id,
        kind,
        &content_ids,
        tasks,
        (req.render_after, options),
    )
    .await
}

/// One job for every scene of several contents (each the caller's).
#[tracing::instrument(name = "jobs.create_batch", skip_all, fields(kind = kind.as_str(), contents = req.content_ids.len()))]
pub async fn create_batch(
    state: &AppState,
    user: &CurrentUser,
    kind: JobKind,
    req: BatchRequest,
) -> Result<JobView, AppError> {
    if req.content_ids.is_empty() {
        return Err(AppError::validation(
            "content_ids",
            "content_ids must name at least one content",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<i64> = req
        .content_ids
        .into_iter()
        .filter(|id| seen.insert(*id))
        .collect();
    if ids.len() > BATCH_CONTENTS_MAX {
        return Err(AppError::validation(
            "content_ids",
            format!(
                "a batch covers at most {BATCH_CONTENTS_MAX} contents (got {})",
                ids.len()
            ),
        ));
    }
    fits(state, kind).await?;
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let content = super::contents::get(state, user, *id)
            .await
            .map_err(|e| match e.code {
                // Still a 404 (another creator's content is not theirs to know of), naming
                // which entry of the list it was.
                crate::error::ErrorCode::NotFound => AppError {
                    message: format!("content {id} (content_ids[{i}]) was not found"),
                    field: Some(format!("content_ids[{i}]")),
                    ..e
                },
                _ => e,
            })?;
        if content.scenes.is_empty() {
            return Err(AppError::validation(
                &format!("content_ids[{i}]"),
                format!("content {id} has no scenes"),
            ));
        }
        let all = content.scenes.iter().map(|s| s.id).collect();
        tasks.extend(
            without_own_pictures(kind, &content, spoken(kind, &content, all))
                .into_iter()
                .map(|s| (*id, Some(s))),
        );
    }
    if tasks.is_empty() {
        return Err(AppError::validation("content_ids", nothing_to_make(kind)));
    }
    for id in &ids {
        super::media::check_quota(state, user, *id).await?;
    }
    check_rate(state, user).await?;
    insert(
        state,
        user.id,
        kind,
        &ids,
        tasks,
        (req.render_after, serde_json::Map::new()),
    )
    .await
}

/// With QStash, refuses media work whose provider timeout outlasts a delivery.
async fn fits(state: &AppState, kind: JobKind) -> Result<(), AppError> {
    if state.qstash.is_none() {
        return Ok(());
    }
    let settings = super::settings::values(state).await?;
    // The offline providers (cards, espeak-ng) wait on no provider.
    let provider = match kind {
        JobKind::Media => settings.image_provider == "openai",
        JobKind::Tts => settings.tts_provider == "openai",
        JobKind::Footage => true,
        JobKind::Render => false,
    };
    let timeout = if provider {
        std::time::Duration::from_secs(u64::from(settings.media_timeout_secs))
    } else {
        std::time::Duration::ZERO
    };
    super::qstash::check_fits(state, task_kind(kind), timeout, 0)
}

/// With QStash, refuses a render of a video too long to finish within a delivery.
async fn fits_render(
    state: &AppState,
    scenes: &[super::render::RenderScene],
) -> Result<(), AppError> {
    if state.qstash.is_none() {
        return Ok(());
    }
    let settings = super::settings::values(state).await?;
    let video_ms: i64 = scenes
        .iter()
        .map(|s| s.video_ms(settings.video_pause_ms))
        .sum();
    super::qstash::check_fits(state, RENDER, std::time::Duration::ZERO, video_ms)
}

/// Why a job for "every scene" has no scene left to work on.
fn nothing_to_make(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Media | JobKind::Footage => {
            "every scene has your own picture: name a scene (scene_ids) to replace its picture"
        }
        _ => "these scenes have no words to narrate",
    }
}

/// Pictures for every scene leave the creator's own alone (a scene named by id gets a
/// new one).
fn without_own_pictures(kind: JobKind, content: &ContentDetail, scenes: Vec<i64>) -> Vec<i64> {
    if !matches!(kind, JobKind::Media | JobKind::Footage) {
        return scenes;
    }
    scenes
        .into_iter()
        .filter(|id| !content.scenes.iter().any(|s| s.id == *id && s.own_image))
        .collect()
}

/// Narration is made only for scenes with words; a silent scene needs none.
fn spoken(kind: JobKind, content: &ContentDetail, scenes: Vec<i64>) -> Vec<i64> {
    if kind != JobKind::Tts {
        return scenes;
    }
    scenes
        .into_iter()
        .filter(|id| {
            content
                .scenes
                .iter()
                .any(|s| s.id == *id && !s.narration.trim().is_empty())
        })
        .collect()
}

/// A render of the content's video: refused, naming the scenes, until every scene has
/// its picture and narration.
#[tracing::instrument(name = "jobs.create_render", skip_all, fields(content_id))]
pub async fn create_render(
    state: &AppState,
    user: &CurrentUser,
    content_id: i64,
) -> Result<JobView, AppError> {
    let content = super::contents::get(state, user, content_id).await?;
    if content.scenes.is_empty() {
        return Err(AppError::validation("id", "this content has no scenes"));
    }
    let scenes = super::render::scenes(state.pool(), content_id)
        .await
        .db("reading scenes")?;
    if let Some(problem) = super::render::missing(&scenes) {
        return Err(AppError::validation(
            "id",
            format!("Generate pictures and narration first: {problem}"),
        ));
    }
    fits_render(state, &scenes).await?;
    super::media::check_quota(state, user, content_id).await?;
    check_rate(state, user).await?;
    let view = enqueue_render(state, user.id, content_id).await?;
    Ok(view)
}

async fn enqueue_render(
    state: &AppState,
    owner_id: i64,
    content_id: i64,
) -> Result<JobView, AppError> {
    insert(
        state,
        owner_id,
        JobKind::Render,
        &[content_id],
        vec![(content_id, None)],
        (false, serde_json::Map::new()),
    )
    .await
}

/// After a picture or narration job completes with "render when ready": renders each of
/// its contents whose scenes all have both, unless a render of it is already waiting.
pub async fn render_when_ready(state: &AppState, job_id: i64) -> Result<(), AppError> {
    let job: Option<(i64, String, String, String)> =
        sqlx::query_as("SELECT owner_id, status, options, content_ids FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(state.pool())
            .await
            .db("reading a job")?;
    let Some((owner_id, status, options, content_ids)) = job else {
        return Ok(());
    };
    let wanted = serde_json::from_str::<serde_json::Value>(&options)
        .ok()
        .and_then(|o| o["render_after"].as_bool())
        .unwrap_or(false);
    if status != "completed" || !wanted {
        return Ok(());
    }
    for content_id in serde_json::from_str::<Vec<i64>>(&content_ids).unwrap_or_default() {
        let scenes = super::render::scenes(state.pool(), content_id)
            .await
            .db("reading scenes")?;
        if scenes.is_empty() || super::render::missing(&scenes).is_some() {
            continue;
        }
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE content_id = $1 AND kind = 'render' AND status IN ('queued', 'processing') LIMIT 1",
        )
        .bind(content_id)
        .fetch_optional(state.pool())
        .await
        .db("reading renders")?;
        if waiting.is_some() {
            continue;
        }
        if let Err(e) = fits_render(state, &scenes).await {
            // Said on the job that asked for it, which has finished its own work.
            sqlx::query("UPDATE jobs SET error = $1 WHERE id = $2")
                .bind(format!("The video was not rendered: {}", e.message))
                .bind(job_id)
                .execute(state.pool())
                .await
                .db("recording why no render started")?;
            continue;
        }
        enqueue_render(state, owner_id, content_id).await?;
    }
    Ok(())
}

/// Spends one of the user's background jobs per minute (a new job, or a Retry failed).
pub async fn check_rate(state: &AppState, user: &CurrentUser) -> Result<(), AppError> {
    let limit = super::settings::values(state).await?.rate_jobs_per_minute;
    state
        .limits
        .check(super::limits::Bucket::Jobs, &user.id.to_string(), limit)
        .map_err(|secs| AppError::rate_limited("background jobs", secs))
}

/// Writes the job and its tasks in one transaction, then wakes the workers.
async fn insert(
    state: &AppState,
    owner_id: i64,
    kind: JobKind,
    content_ids: &[i64],
    tasks: Vec<(i64, Option<i64>)>,
    (render_after, mut options): (bool, serde_json::Map<String, serde_json::Value>),
) -> Result<JobView, AppError> {
    // The engine looks for `"render_after":true` in the text, as serde_json writes it.
    let mut all = serde_json::Map::new();
    all.insert("render_after".into(), render_after.into());
    all.append(&mut options);
    let options = serde_json::Value::Object(all).to_string();
    let content_id = (content_ids.len() == 1).then(|| content_ids[0]);
    let content_list = serde_json::to_string(content_ids)
        .map_err(|e| super::error::internal("encoding a job", e))?;
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let job_id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (owner_id, kind, content_id, content_ids, options, status, stage, stage_message, total_tasks, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $7, 'queued', 'queued', 'Waiting to start', $5, $6, $6) RETURNING id",
    )
    .bind(owner_id)
    .bind(kind.as_str())
    .bind(content_id)
    .bind(content_list)
    .bind(tasks.len() as i64)
    .bind(now)
    .bind(options)
    .fetch_one(&mut *tx)
    .await
    .db("inserting a job")?;
    let mut task_ids = Vec::with_capacity(tasks.len());
    for (content_id, scene_id) in &tasks {
        let task_id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (job_id, kind, content_id, scene_id, max_attempts, run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $6) RETURNING id",
        )
        .bind(job_id)
        .bind(task_kind(kind))
        .bind(content_id)
        .bind(scene_id)
        .bind(MAX_ATTEMPTS)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .db("inserting a task")?;
        task_ids.push(task_id);
    }
    super::engine::announce(state, &mut tx, task_kind(kind)).await?;
    super::qstash::enqueue_tasks(state, &mut tx, &task_ids).await?;
    tx.commit().await.db("committing a job")?;
    super::engine::wake_here(state, task_kind(kind));
    super::qstash::nudge(state);
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(job_id)
        .fetch_one(state.pool())
        .await
        .db("reading a job")?;
    let mut job = job_view(&row).db("decoding a job")?;
    job.queue_ahead = queue_ahead(state, &job).await?;
    Ok(job)
}

fn scope() -> &'static str {
    "($2 = 1 OR owner_id = $3)"
}

/// 404 unless the job exists and is the caller's (or the caller is an admin). A webhook
/// delivery's job is reached through its endpoint (`webhooks`) only.
async fn check_owner(state: &AppState, user: &CurrentUser, id: i64) -> Result<(), AppError> {
    sqlx::query_scalar::<_, i64>(&format!(
        "SELECT id FROM jobs WHERE id = $1 AND {} AND kind <> '{WEBHOOK_JOB}'",
        scope()
    ))
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(state.pool())
    .await
    .db("reading a job")?
    .map(|_| ())
    .ok_or_else(|| AppError::not_found("job"))
}

/// The caller's latest jobs (everyone's for an admin), newest first.
pub async fn list(
    state: &AppState,
    user: &CurrentUser,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<JobView>, AppError> {
    if let Some(status) = filter.status.as_deref() {
        if !JOB_STATUSES.contains(&status) {
            return Err(AppError::validation(
                "status",
                format!(
                    "status must be one of {} (got {status:?})",
                    JOB_STATUSES.join(", ")
                ),
            ));
        }
    }
    if filter.content_id.is_some_and(|id| id < 1) {
        return Err(AppError::validation(
            "content_id",
            "content_id must be a positive integer",
        ));
    }
    if let Some(kind) = filter.kind.as_deref() {
        if JobKind::parse(kind).is_none() {
            return Err(AppError::validation(
                "kind",
                format!("kind must be media, tts, render or footage (got {kind:?})"),
            ));
        }
    }
    // A batch job has no single content_id; its tasks say which contents it covers.
    let rows = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE {} AND kind <> '{WEBHOOK_JOB}' \
         AND ($1 = 0 OR content_id = $1 OR (content_id IS NULL AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = jobs.id AND t.content_id = $1))) \
         AND ($4 = '' OR status = $4) AND ($5 = '' OR kind = $5) \
         ORDER BY created_at DESC, id DESC LIMIT $6",
        scope()
    ))
    .bind(filter.content_id.unwrap_or(0))
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .bind(filter.status.as_deref().unwrap_or_default())
    .bind(filter.kind.as_deref().unwrap_or_default())
    .bind(limit)
    .fetch_all(state.pool())
    .await
    .db("listing jobs")?;
    let mut jobs = rows
        .iter()
        .map(job_view)
        .collect::<Result<Vec<_>, _>>()
        .db("decoding jobs")?;
    // Waiting jobs are few and near the top; past the first 30 the position is not worth
    // two queries each.
    for job in jobs.iter_mut().take(30) {
        job.queue_ahead = queue_ahead(state, job).await?;
    }
    Ok(jobs)
}

/// How many tasks of the same kind are due before this job's first waiting task.
async fn queue_ahead(state: &AppState, job: &JobView) -> Result<Option<i64>, AppError> {
    if !matches!(job.status.as_str(), "queued" | "processing") {
        return Ok(None);
    }
    let first: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, run_at, id FROM tasks WHERE job_id = $1 AND status = 'queued' ORDER BY run_at, id LIMIT 1",
    )
    .bind(job.id)
    .fetch_optional(state.pool())
    .await
    .db("reading the queue")?;
    let Some((kind, run_at, id)) = first else {
        return Ok(None);
    };
    let ahead: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks WHERE kind = $1 AND status = 'queued' AND (run_at < $2 OR (run_at = $2 AND id < $3))",
    )
    .bind(kind)
    .bind(run_at)
    .bind(id)
    .fetch_one(state.pool())
    .await
    .db("reading the queue")?;
    Ok(Some(ahead))
}

/// The latest `limit` failed tasks of every user, newest first, with their details: for
/// the admins' status page. Webhook deliveries are left out: a creator's unreachable
/// receiver is theirs to see (on their Webhooks page), and would push the rest off.
pub async fn recent_failures(
    state: &AppState,
    limit: i64,
) -> Result<Vec<crate::model::TaskFailure>, AppError> {
    let rows = sqlx::query(
        "SELECT id, job_id, content_id, kind, last_error, error_detail, COALESCE(finished_at, updated_at) AS failed_at \
         FROM tasks WHERE status = 'failed' AND kind <> $2 \
         ORDER BY COALESCE(finished_at, updated_at) DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .bind(WEBHOOK_DELIVERY)
    .fetch_all(state.pool())
    .await
    .db("reading failed tasks")?;
    rows.iter()
        .map(|r| {
            Ok(crate::model::TaskFailure {
                task_id: r.try_get("id")?,
                job_id: r.try_get("job_id")?,
                content_id: r.try_get("content_id")?,
                kind: r.try_get("kind")?,
                failed_at: format_ms(r.try_get("failed_at")?),
                message: r
                    .try_get::<Option<String>, _>("last_error")?
                    .unwrap_or_default(),
                detail: r.try_get("error_detail")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .db("decoding failed tasks")
}

/// A task as `user` may see it: the detail of a failure (a tool's own words, paths, the
/// database's) only for admins.
fn task_view(r: &sqlx::any::AnyRow, user: &CurrentUser) -> Result<TaskView, sqlx::Error> {
    Ok(TaskView {
        error_detail: if user.is_admin() {
            r.try_get("error_detail")?
        } else {
            None
        },
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        scene_id: r.try_get("scene_id")?,
        status: r.try_get("status")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        last_error: r.try_get("last_error")?,
        output_asset_id: r.try_get("output_asset_id")?,
    })
}

const TASK_COLUMNS: &str = "t.id, t.job_id, t.kind, t.scene_id, t.status, t.attempt, t.max_attempts, t.last_error, t.error_detail, t.output_asset_id";

pub async fn get(state: &AppState, user: &CurrentUser, id: i64) -> Result<JobDetail, AppError> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND {} AND kind <> '{WEBHOOK_JOB}'",
        scope()
    ))
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(state.pool())
    .await
    .db("reading a job")?
    .ok_or_else(|| AppError::not_found("job"))?;
    let mut job = job_view(&row).db("decoding a job")?;
    job.queue_ahead = queue_ahead(state, &job).await?;
    let tasks = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN scenes s ON s.id = t.scene_id WHERE t.job_id = $1 ORDER BY t.content_id, s.position, t.id"
    ))
    .bind(id)
    .fetch_all(state.pool())
    .await
    .db("reading tasks")?;
    let tasks = tasks
        .iter()
        .map(|row| task_view(row, user))
        .collect::<Result<_, sqlx::Error>>()
        .db("decoding tasks")?;
    Ok(JobDetail { job, tasks })
}

/// The latest jobs with every task: what the content and jobs pages poll, in a fixed
/// number of queries however many jobs and tasks there are (and two per waiting job).
pub async fn list_details(
    state: &AppState,
    user: &CurrentUser,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<JobDetail>, AppError> {
    let jobs = list(state, user, filter, limit).await?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=jobs.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN scenes s ON s.id = t.scene_id \
         WHERE t.job_id IN ({}) ORDER BY t.content_id, s.position, t.id",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for job in &jobs {
        query = query.bind(job.id);
    }
    let rows = query.fetch_all(state.pool()).await.db("reading tasks")?;
    let mut details: Vec<JobDetail> = jobs
        .into_iter()
        .map(|job| JobDetail {
            job,
            tasks: Vec::new(),
        })
        .collect();
    for row in &rows {
        let job_id: i64 = row.try_get("job_id").db("decoding tasks")?;
        if let Some(detail) = details.iter_mut().find(|d| d.job.id == job_id) {
            detail
                .tasks
                .push(task_view(row, user).db("decoding tasks")?);
        }
    }
    Ok(details)
}

/// Queued tasks stop at once; running ones stop at their next heartbeat and record
/// nothing; one waiting to retry is not retried.
pub async fn cancel(state: &AppState, user: &CurrentUser, id: i64) -> Result<JobDetail, AppError> {
    check_owner(state, user, id).await?;
    let now = now_ms();
    // Tasks before the job, as `finish` and `retry_failed` take them.
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    sqlx::query("UPDATE tasks SET status = 'cancelled', updated_at = $1, finished_at = $1 WHERE job_id = $2 AND status = 'queued'")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .db("cancelling tasks")?;
    let cancelled = sqlx::query("UPDATE jobs SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status IN ('queued', 'processing')")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .db("cancelling a job")?
        .rows_affected()
        > 0;
    // Rows the relay has not published yet are dropped, a running task's too (it stops at
    // its next heartbeat); a relay publishing one right now cancels what it published.
    sqlx::query(
        "DELETE FROM outbox WHERE published_at IS NULL AND task_id IN (SELECT id FROM tasks WHERE job_id = $1)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .db("cancelling publications")?;
    refresh_in(state, &mut tx, id).await?;
    tx.commit().await.db("committing a cancel")?;
    // A job already finished has nothing left in QStash.
    if cancelled {
        super::qstash::cancel_job(state, id).await;
    }
    // Segments encoded ahead for a render that is no longer coming are stopped too.
    let contents: Option<(Option<i64>, String)> =
        sqlx::query_as("SELECT content_id, content_ids FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(state.pool())
            .await
            .db("reading a job")?;
    if let Some((one, many)) = contents {
        let mut ids: Vec<i64> = serde_json::from_str(&many).unwrap_or_default();
        ids.extend(one);
        ids.sort_unstable();
        ids.dedup();
        let mut stopping = tokio::task::JoinSet::new();
        for content_id in ids {
            let state = state.clone();
            stopping.spawn(async move { super::render::stop_preparing(&state, content_id).await });
        }
        while stopping.join_next().await.is_some() {}
    }
    get(state, user, id).await
}

/// Queues the failed tasks again, from their first attempt; the others are untouched.
pub async fn retry_failed(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
) -> Result<JobDetail, AppError> {
    check_owner(state, user, id).await?;
    let cancelled: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(state.pool())
        .await
        .db("reading a job")?;
    if cancelled.as_deref() == Some("cancelled") {
        return Err(AppError::validation(
            "id",
            "this job was cancelled; start a new one for the scenes you still need",
        ));
    }
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let retried: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET status = 'queued', attempt = 0, run_at = $1, last_error = NULL, error_detail = NULL, locked_until = NULL, \
         worker_id = NULL, finished_at = NULL, updated_at = $1 WHERE job_id = $2 AND status = 'failed' RETURNING id",
    )
    .bind(now)
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .db("retrying tasks")?;
    if retried.is_empty() {
        return Err(AppError::validation(
            "id",
            "this job has no failed tasks to retry",
        ));
    }
    // A retry queues work like a new job does, so it counts like one; refused, the
    // transaction is dropped and nothing changes.
    check_rate(state, user).await?;
    sqlx::query("UPDATE jobs SET status = 'processing', error = NULL, completed_at = NULL, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .db("reopening a job")?;
    super::qstash::enqueue_tasks(state, &mut tx, &retried).await?;
    tx.commit().await.db("retrying tasks")?;
    refresh(state, id).await?;
    super::engine::wake(state, None).await;
    super::qstash::nudge(state);
    get(state, user, id).await
}

/// A claimed task starts its job; one cheap write, since the counts have not changed
/// (`refresh` recomputes them when tasks finish).
pub async fn mark_started(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
) -> Result<(), AppError> {
    sqlx::query(&format!(
        "UPDATE jobs SET {} WHERE id = $2 AND status = 'queued'",
        started_set("$1")
    ))
    .bind(now_ms())
    .bind(job_id)
    .execute(&mut **tx)
    .await
    .db("starting a job")?;
    Ok(())
}

/// The `SET` list of a job that starts now (`now`: the placeholder of the time in ms).
pub fn started_set(now: &str) -> String {
    format!(
        "status = 'processing', stage = 'processing', \
         stage_message = CASE WHEN jobs.kind = 'render' THEN 'Rendering' ELSE '0 of ' || jobs.total_tasks || ' scenes done' END, \
         started_at = COALESCE(jobs.started_at, {now}), updated_at = {now}"
    )
}

/// Recomputes a job's counts, progress, status and stage message from its tasks, so the
/// job never disagrees with what its scenes show.
pub async fn refresh(state: &AppState, job_id: i64) -> Result<(), AppError> {
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    refresh_in(state, &mut tx, job_id).await?;
    tx.commit().await.db("committing a job")?;
    super::webhooks::wake(state);
    Ok(())
}

/// `refresh` inside the caller's transaction, after its own writes to the job's tasks:
/// a task's outcome and its job's counts then commit together. A job that has just
/// completed or failed queues its webhook deliveries in the same transaction; the caller
/// calls `webhooks::wake` after committing. Returns the job's new status (None when the
/// job is gone).
pub async fn refresh_in(
    state: &AppState,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
) -> Result<Option<&'static str>, AppError> {
    // Lock the job row (a write, so SQLite takes its write lock too): concurrent refreshes
    // then run one after another, and the last one counts every finished task. Without it
    // a slower refresh could write stale counts over a newer one.
    let current: Option<(String, String)> =
        sqlx::query_as("UPDATE jobs SET updated_at = $1 WHERE id = $2 RETURNING status, kind")
            .bind(now_ms())
            .bind(job_id)
            .fetch_optional(&mut **tx)
            .await
            .db("locking a job")?;
    let Some((current, kind)) = current else {
        return Ok(None);
    };
    let render = kind == JobKind::Render.as_str();
    if current == "cancelled" {
        // A task re-queued for a retry by a worker that had not yet seen the cancel (its
        // transaction started first) ends here, under the job's lock.
        sqlx::query(
            "UPDATE tasks SET status = 'cancelled', finished_at = $1, updated_at = $1 WHERE job_id = $2 AND status = 'queued'",
        )
        .bind(now_ms())
        .bind(job_id)
        .execute(&mut **tx)
        .await
        .db("cancelling tasks")?;
    }
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM tasks WHERE job_id = $1 GROUP BY status")
            .bind(job_id)
            .fetch_all(&mut **tx)
            .await
            .db("counting tasks")?;
    let count = |s: &str| {
        counts
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let (queued, running, succeeded, failed, cancelled) = (
        count("queued"),
        count("running"),
        count("succeeded"),
        count("failed"),
        count("cancelled"),
    );
    let total = queued + running + succeeded + failed + cancelled;
    let finished = succeeded + failed + cancelled;
    let progress = if total == 0 {
        100
    } else {
        finished * 100 / total
    };
    let (status, stage, message) = if render {
        // One task: the render's own progress messages stand while it runs.
        match (queued, running, succeeded, failed) {
            (_, 1.., _, _) if current == "cancelled" => {
                ("cancelled", "cancelling", "Stopping the render".to_owned())
            }
            (1.., _, _, _) | (_, 1.., _, _) if current != "cancelled" => {
                let status = if running > 0 { "processing" } else { "queued" };
                (status, status, "Waiting to render".to_owned())
            }
            (_, _, 1.., _) => ("completed", "done", "The video is ready".to_owned()),
            (_, _, _, 1..) => ("failed", "done", "The render failed".to_owned()),
            _ => ("cancelled", "cancelled", "Render cancelled".to_owned()),
        }
    } else if queued + running > 0 {
        if current == "cancelled" {
            (
                "cancelled",
                "cancelling",
                format!("Cancelling: {running} scenes still finishing"),
            )
        } else if running == 0 && finished == 0 {
            ("queued", "queued", "Waiting to start".to_owned())
        } else {
            (
                "processing",
                "processing",
                format!(
                    "{succeeded} of {total} scenes done{}",
                    failed_suffix(failed)
                ),
            )
        }
    } else if current == "cancelled" || (cancelled > 0 && succeeded + failed == 0) {
        (
            "cancelled",
            "cancelled",
            format!("Cancelled: {succeeded} of {total} scenes done"),
        )
    } else if failed > 0 {
        (
            "failed",
            "done",
            format!("{succeeded} of {total} scenes done, {failed} failed"),
        )
    } else {
        (
            "completed",
            "done",
            if total == 1 {
                "The scene is done".to_owned()
            } else {
                format!("All {total} scenes done")
            },
        )
    };
    let error = if failed == 0 {
        None
    } else if render {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT last_error FROM tasks WHERE job_id = $1 AND status = 'failed' LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await
        .db("reading a render's error")?
        .flatten()
    } else {
        Some(format!(
            "{failed} of {total} scenes failed; see each scene's error"
        ))
    };
    let now = now_ms();
    let done = queued + running == 0;
    sqlx::query(
        "UPDATE jobs SET status = $1, stage = $2, stage_message = $3, progress = $4, total_tasks = $5, done_tasks = $6, \
         failed_tasks = $7, error = $8, updated_at = $9, \
         started_at = CASE WHEN started_at IS NULL AND $10 = 1 THEN $9 ELSE started_at END, \
         completed_at = CASE WHEN $11 = 1 THEN COALESCE(completed_at, $9) ELSE NULL END WHERE id = $12",
    )
    .bind(status)
    .bind(stage)
    .bind(message)
    .bind(progress)
    .bind(total)
    .bind(succeeded)
    .bind(failed)
    .bind(error)
    .bind(now)
    .bind(i64::from(running + finished > 0))
    .bind(i64::from(done))
    .bind(job_id)
    .execute(&mut **tx)
    .await
    .db("updating a job")?;
    if matches!(status, "completed" | "failed") && current != status && kind != WEBHOOK_JOB {
        super::webhooks::job_finished(state, tx, job_id).await?;
    }
    Ok(Some(status))
}

fn failed_suffix(failed: i64) -> String {
    if failed > 0 {
        format!(", {failed} failed")
    } else {
        String::new()
    }
}
