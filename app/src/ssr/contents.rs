//! The content library: saved scripts and their scenes.

use sqlx::{AnyPool, Row};

use super::auth::CurrentUser;
use super::db::{format_ms, now_ms};
use super::error::DbResultExt;
use super::script::{resolve_presets, validate_input};
use super::state::AppState;
use super::validate;
use crate::error::AppError;
use crate::model::{
    limits, ContentDetail, ContentPage, ContentSummary, ListQuery, Mode, PresetsInput,
    SaveContentRequest, SceneClip, SceneDraft, SceneView, SettingsValues, Transition,
    UpdateContentRequest, WhenShorter,
};

fn check_scene(
    i: usize,
    narration: &str,
    visual_prompt: &str,
    seconds: f64,
) -> Result<SceneDraft, AppError> {
    let f = |name: &str| format!("scenes[{i}].{name}");
    Ok(SceneDraft {
        // No words: a silent scene, shown for its planned time.
        narration: validate::text(&f("narration"), narration, 0, limits::NARRATION_MAX_CHARS)?,
        visual_prompt: validate::text(
            &f("visual_prompt"),
            visual_prompt,
            0,
            limits::VISUAL_PROMPT_MAX_CHARS,
        )?,
        seconds: validate::range_f64(&f("seconds"), seconds, 0.5, limits::SCENE_SECONDS_MAX)?,
    })
}

fn check_scene_count(n: usize) -> Result<(), AppError> {
    if n == 0 {
        return Err(AppError::validation(
            "scenes",
            "a content needs at least one scene",
        ));
    }
    if n > limits::SCENES_PER_CONTENT_MAX {
        return Err(AppError::validation(
            "scenes",
            format!(
                "a content holds at most {} scenes (got {n})",
                limits::SCENES_PER_CONTENT_MAX
            ),
        ));
    }
    Ok(())
}

fn script_text(scenes: &[SceneDraft]) -> String {
    scenes
        .iter()
        .map(|s| s.narration.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tracing::instrument(name = "contents.save", skip_all)]
pub async fn save(
    state: &AppState,
    user: &CurrentUser,
    req: SaveContentRequest,
) -> Result<ContentDetail, AppError> {
    let input = validate_input(req.mode, &req.input)?;
    let s = req.script;
    let title = validate::text("script.title", &s.title, 1, limits::TITLE_MAX_CHARS)?;
    let hook = validate::text("script.hook", &s.hook, 0, limits::NARRATION_MAX_CHARS)?;
    let description = validate::text(
        "script.description",
        &s.description,
        0,
        limits::DESCRIPTION_MAX_CHARS,
    )?;
    if s.hashtags.len() > limits::HASHTAGS_MAX {
        return Err(AppError::validation(
            "script.hashtags",
            format!("at most {} hashtags", limits::HASHTAGS_MAX),
        ));
    }
    let hashtags = s
        .hashtags
        .iter()
        .enumerate()
        .map(|(i, h)| {
            validate::text(
                &format!("script.hashtags[{i}]"),
                h,
                1,
                limits::SHORT_TEXT_MAX_CHARS,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let presets = resolve_presets(
        &PresetsInput::from(&s.presets),
        &SettingsValues::default(),
        "script.presets",
    )?;
    let provider = validate::text(
        "script.provider",
        &s.provider,
        0,
        limits::SHORT_TEXT_MAX_CHARS,
    )?;
    check_scene_count(s.scenes.len()).map_err(|mut e| {
        e.field = Some("script.scenes".into());
        e
    })?;
    let scenes = s
        .scenes
        .iter()
        .enumerate()
        .map(|(i, sc)| check_scene(i, &sc.narration, &sc.visual_prompt, sc.seconds))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|mut e| {
            e.field = e.field.map(|f| format!("script.{f}"));
            e
        })?;

    let now = now_ms();
    let hashtags_json = serde_json::to_string(&hashtags).unwrap_or_else(|_| "[]".into());
    // Content and scenes commit together: a failure leaves no half-saved content.
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contents (owner_id, title, mode, input, language, tone, target_seconds, scene_count, aspect_ratio, \
         visual_style, voice, hook, description, hashtags, script_text, provider, status, created_at, updated_at, speed, transition) \
         VALUES ($17, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'draft', $16, $16, NULLIF($18, -1.0), $19) RETURNING id",
    )
    .bind(&title)
    .bind(req.mode.as_str())
    .bind(&input)
    .bind(&presets.language)
    .bind(&presets.tone)
    .bind(i64::from(presets.target_seconds))
    .bind(i64::from(presets.scene_count))
    .bind(&presets.aspect_ratio)
    .bind(&presets.visual_style)
    .bind(&presets.voice)
    .bind(&hook)
    .bind(&description)
    .bind(&hashtags_json)
    .bind(script_text(&scenes))
    .bind(&provider)
    .bind(now)
    .bind(user.id)
    .bind(super::db::nullable_f64(presets.speed))
    .bind(presets.transition.as_str())
    .fetch_one(&mut *tx)
    .await
    .db("inserting a content")?;
    for (position, scene) in scenes.iter().enumerate() {
        insert_scene(&mut tx, id, position as i64, scene, now).await?;
    }
    tx.commit().await.db("committing a content")?;
    get(state, user, id).await
}

async fn insert_scene(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    content_id: i64,
    position: i64,
    scene: &SceneDraft,
    now: i64,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO scenes (content_id, position, narration, visual_prompt, planned_seconds, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(content_id)
    .bind(position)
    .bind(&scene.narration)
    .bind(&scene.visual_prompt)
    .bind(scene.seconds)
    .bind(now)
    .execute(&mut **tx)
    .await
    .db("inserting a scene")?;
    Ok(())
}

/// A creator's own contents; an admin's list holds everyone's.
pub async fn list(
    state: &AppState,
    user: &CurrentUser,
    query: ListQuery,
) -> Result<ContentPage, AppError> {
    let per_page = validate::range_u32(
        "per_page",
        query.per_page.unwrap_or(20),
        1,
        limits::PAGE_SIZE_MAX,
    )?;
    let page = validate::range_u32("page", query.page.unwrap_or(1), 0, limits::PAGE_MAX)?.max(1);
    let search = match query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => Some(validate::text("q", q, 1, limits::SEARCH_MAX_CHARS)?),
        None => None,
    };
    // `%` and `_` typed by the user are literal, not wildcards.
    let pattern = search.map(|q| {
        format!(
            "%{}%",
            q.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let filter = "($1 IS NULL OR LOWER(title) LIKE $1 ESCAPE '\\') AND ($2 = 1 OR owner_id = $3)";
    let pool: &AnyPool = state.pool();
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM contents WHERE {filter}"))
        .bind(pattern.clone())
        .bind(i64::from(user.is_admin()))
        .bind(user.id)
        .fetch_one(pool)
        .await
        .db("counting contents")?;
    let rows = sqlx::query(&format!(
        "SELECT c.id, c.title, c.mode, c.status, c.aspect_ratio, c.created_at, c.updated_at, \
         (SELECT COUNT(*) FROM scenes s WHERE s.content_id = c.id) AS scenes \
         FROM contents c WHERE {filter} ORDER BY c.created_at DESC, c.id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(pattern)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .bind(i64::from(per_page))
    .bind(i64::from(page - 1) * i64::from(per_page))
    .fetch_all(pool)
    .await
    .db("listing contents")?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(ContentSummary {
                id: r.try_get("id")?,
                title: r.try_get("title")?,
                mode: Mode::parse(&r.try_get::<String, _>("mode")?).unwrap_or_default(),
                status: r.try_get("status")?,
                scene_count: r.try_get("scenes")?,
                aspect_ratio: r.try_get("aspect_ratio")?,
                created_at: format_ms(r.try_get("created_at")?),
                updated_at: format_ms(r.try_get("updated_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .db("reading contents")?;
    Ok(ContentPage {
        items,
        page,
        per_page,
        total,
    })
}

/// Sets how the content's scenes give way to each other; the next render draws it, and
/// the video is out of date until then. 404 for another's content.
pub async fn set_transition(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
    transition: Transition,
) -> Result<ContentDetail, AppError> {
    let touched = sqlx::query(
        "UPDATE contents SET transition = $1, updated_at = $2 WHERE id = $3 AND ($4 = 1 OR owner_id = $5)",
    )
    .bind(transition.as_str())
    .bind(now_ms())
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .execute(state.pool())
    .await
    .db("saving a content's transition")?;
    if touched.rows_affected() == 0 {
        return Err(AppError::not_found("content"));
    }
    // Segments are cut differently for each kind of join: start on them now.
    super::render::prepare_ahead(state, id);
    get(state, user, id).await
}

/// Someone else's content answers 404, as if it did not exist, so ids cannot be probed.
pub async fn get(state: &AppState, user: &CurrentUser, id: i64) -> Result<ContentDetail, AppError> {
    let pool = state.pool();
    let row = sqlx::query(
        "SELECT id, title, mode, input, status, hook, description, hashtags, provider, language, tone, \
         target_seconds, scene_count, aspect_ratio, visual_style, voice, speed, transition, created_at, updated_at, \
         video_asset_id, subtitles_asset_id, video_sources, music_asset_id \
         FROM contents WHERE id = $1 AND ($2 = 1 OR owner_id = $3)",
    )
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(pool)
    .await
    .db("reading a content")?
    .ok_or_else(|| AppError::not_found("content"))?;
    let scenes = sqlx::query(
        "SELECT s.id, s.position, s.narration, s.visual_prompt, s.planned_seconds, s.image_asset_id, \
         s.audio_asset_id, CASE WHEN a.provider = 'upload' THEN 1 ELSE 0 END AS own_image, \
         s.clip_asset_id, ca.duration_ms AS clip_ms, s.clip_when_shorter, s.clip_sound, a.credit \
         FROM scenes s LEFT JOIN assets a ON a.id = s.image_asset_id \
         LEFT JOIN assets ca ON ca.id = s.clip_asset_id \
         WHERE s.content_id = $1 ORDER BY s.position, s.id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .db("reading scenes")?;
    let read = || -> Result<ContentDetail, sqlx::Error> {
        Ok(ContentDetail {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            mode: Mode::parse(&row.try_get::<String, _>("mode")?).unwrap_or_default(),
            input: row.try_get("input")?,
            status: row.try_get("status")?,
            hook: row.try_get("hook")?,
            description: row.try_get("description")?,
            hashtags: serde_json::from_str(&row.try_get::<String, _>("hashtags")?)
                .unwrap_or_default(),
            presets: crate::model::Presets {
                language: row.try_get("language")?,
                tone: row.try_get("tone")?,
                target_seconds: row.try_get::<i64, _>("target_seconds")? as u32,
                scene_count: row.try_get::<i64, _>("scene_count")? as u32,
                aspect_ratio: row.try_get("aspect_ratio")?,
                visual_style: row.try_get("visual_style")?,
                voice: row.try_get("voice")?,
                speed: row.try_get("speed")?,
                // Another version's word reads as the default rather than hiding the content.
                transition: Transition::parse(&row.try_get::<String, _>("transition")?)
                    .unwrap_or_default(),
            },
            provider: row.try_get("provider")?,
            scenes: scenes
                .iter()
                .map(|s| {
                    Ok(SceneView {
                        id: s.try_get("id")?,
                        position: s.try_get("position")?,
                        narration: s.try_get("narration")?,
                        visual_prompt: s.try_get("visual_prompt")?,
                        seconds: s.try_get("planned_seconds")?,
                        image_asset_id: s.try_get("image_asset_id")?,
                        audio_asset_id: s.try_get("audio_asset_id")?,
                        own_image: s.try_get::<i64, _>("own_image")? == 1,
                        clip: match s.try_get::<Option<i64>, _>("clip_asset_id")? {
                            None => None,
                            Some(asset_id) => Some(SceneClip {
                                asset_id,
                                duration_ms: s
                                    .try_get::<Option<i64>, _>("clip_ms")?
                                    .unwrap_or_default(),
                                when_shorter: WhenShorter::parse(
                                    &s.try_get::<String, _>("clip_when_shorter")?,
                                )
                                .unwrap_or_default(),
                                sound: s.try_get::<i64, _>("clip_sound")?.clamp(0, 100) as u32,
                            }),
                        },
                        credit: s
                            .try_get::<Option<String>, _>("credit")?
                            .and_then(|c| serde_json::from_str(&c).ok()),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
            created_at: format_ms(row.try_get("created_at")?),
            updated_at: format_ms(row.try_get("updated_at")?),
            video_asset_id: row.try_get("video_asset_id")?,
            subtitles_asset_id: row.try_get("subtitles_asset_id")?,
            music_asset_id: row.try_get("music_asset_id")?,
            video_out_of_date: false,
        })
    };
    let mut detail = read().db("decoding a content")?;
    // Out of date when the scenes' current pictures and narration (in order), or the
    // music, are not the ones the video was made from.
    let made_from: Option<String> = row.try_get("video_sources").db("decoding a content")?;
    if let (Some(_), Some(made_from)) = (detail.video_asset_id, made_from) {
        let now: Vec<(Option<i64>, Option<i64>)> = detail
            .scenes
            .iter()
            .map(|s| (s.image_asset_id, s.audio_asset_id))
            .collect();
        detail.video_out_of_date = super::render::sources_of(
            &now,
            detail.music_asset_id,
            detail.presets.transition,
            &detail
                .scenes
                .iter()
                .map(|s| {
                    s.clip
                        .as_ref()
                        .map(|c| (c.asset_id, c.when_shorter, c.sound))
                })
                .collect::<Vec<_>>(),
        ) != made_from;
    }
    Ok(detail)
}

#[tracing::instrument(name = "contents.update", skip_all, fields(content_id = id))]
pub async fn update(
    state: &AppState,
    user: &CurrentUser,
    id: i64,
    req: UpdateContentRequest,
) -> Result<ContentDetail, AppError> {
    let title = validate::text("title", &req.title, 1, limits::TITLE_MAX_CHARS)?;
    check_scene_count(req.scenes.len())?;
    let scenes = req
        .scenes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let seconds = s
                .seconds
                .unwrap_or_else(|| (s.narration.split_whitespace().count() as f64 / 2.5).max(2.0));
            check_scene(
                i,
                &s.narration,
                &s.visual_prompt,
                seconds.min(limits::SCENE_SECONDS_MAX),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    // Write first: on SQLite a transaction that starts with a read and then writes can
    // fail with SQLITE_BUSY_SNAPSHOT under concurrent writers, which the busy timeout
    // does not cover. The update also answers whether the content is the caller's.
    let touched = sqlx::query(
        "UPDATE contents SET title = $1, script_text = $2, updated_at = $3 WHERE id = $4 AND ($5 = 1 OR owner_id = $6)",
    )
    .bind(&title)
    .bind(script_text(&scenes))
    .bind(now)
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .execute(&mut *tx)
    .await
    .db("updating a content")?;
    if touched.rows_affected() == 0 {
        return Err(AppError::not_found("content"));
    }
    let existing: Vec<i64> = sqlx::query_scalar("SELECT id FROM scenes WHERE content_id = $1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .db("reading scene ids")?;
    let mut kept = Vec::new();
    for (i, edit) in req.scenes.iter().enumerate() {
        if let Some(scene_id) = edit.id {
            if !existing.contains(&scene_id) {
                return Err(AppError::validation(
                    &format!("scenes[{i}].id"),
                    format!("scene {scene_id} is not part of this content"),
                ));
            }
            if kept.contains(&scene_id) {
                return Err(AppError::validation(
                    &format!("scenes[{i}].id"),
                    format!("scene {scene_id} is listed twice"),
                ));
            }
            kept.push(scene_id);
        }
    }
    // A deleted scene takes its tasks with it; their jobs are recounted below, so a job
    // whose last unfinished task was one of them ends instead of waiting forever.
    let mut touched_jobs: Vec<i64> = Vec::new();
    for gone in existing.iter().filter(|e| !kept.contains(e)) {
        let jobs: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT job_id FROM tasks WHERE scene_id = $1")
                .bind(gone)
                .fetch_all(&mut *tx)
                .await
                .db("reading a scene's jobs")?;
        for job in jobs {
            if !touched_jobs.contains(&job) {
                touched_jobs.push(job);
            }
        }
        sqlx::query("DELETE FROM scenes WHERE id = $1")
            .bind(gone)
            .execute(&mut *tx)
            .await
            .db("deleting a scene")?;
    }
    for job in touched_jobs {
        super::jobs::refresh_in(state, &mut tx, job).await?;
    }
    for (position, (edit, scene)) in req.scenes.iter().zip(&scenes).enumerate() {
        match edit.id {
            Some(scene_id) => {
                sqlx::query(
                    // Narration recorded for other words no longer fits the scene.
                    "UPDATE scenes SET position = $1, audio_asset_id = CASE WHEN narration = $2 THEN audio_asset_id ELSE NULL END, \
                     narration = $2, visual_prompt = $3, planned_seconds = $4, updated_at = $5 WHERE id = $6",
                )
                .bind(position as i64)
                .bind(&scene.narration)
                .bind(&scene.visual_prompt)
                .bind(scene.seconds)
                .bind(now)
                .bind(scene_id)
                .execute(&mut *tx)
                .await
                .db("updating a scene")?;
            }
            None => insert_scene(&mut tx, id, position as i64, scene, now).await?,
        }
    }
    // Narration of edited words and the media of deleted scenes go with the edit.
    let dropped = super::media::drop_unowned(&mut tx, id).await?;
    tx.commit().await.db("committing a content edit")?;
    super::webhooks::wake(state);
    for key in dropped {
        state.storage.remove(&key).await;
    }
    get(state, user, id).await
}

#[tracing::instrument(name = "contents.delete", skip_all, fields(content_id = id))]
pub async fn delete(state: &AppState, user: &CurrentUser, id: i64) -> Result<(), AppError> {
    let pool = state.pool();
    // QStash's messages for its unfinished tasks (batch jobs' too) are cancelled once
    // the rows are gone.
    let messages = super::qstash::messages_of_content(state, id).await?;
    // Scenes, assets and jobs go with the row (ON DELETE CASCADE); the owner's webhooks
    // hear of it from the same transaction.
    let mut tx = pool.begin().await.db("starting a transaction")?;
    let deleted: Option<(Option<i64>, String)> = sqlx::query_as(
        "DELETE FROM contents WHERE id = $1 AND ($2 = 1 OR owner_id = $3) RETURNING owner_id, title",
    )
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await
    .db("deleting a content")?;
    let Some((owner_id, title)) = deleted else {
        return Err(AppError::not_found("content"));
    };
    if let Some(owner_id) = owner_id {
        super::webhooks::content_deleted(state, &mut tx, owner_id, id, &title).await?;
    }
    tx.commit().await.db("deleting a content")?;
    super::webhooks::wake(state);
    // Every file of the content lives in its own directory: assets, cached segments,
    // anything half-made.
    state.storage.remove_content(id).await;
    super::qstash::cancel_messages(state, messages);
    Ok(())
}
