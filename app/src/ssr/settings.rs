//! Settings: one JSON document of values plus sealed secrets, in the `settings` table.

use sqlx::AnyPool;

use super::crypto;
use super::db::now_ms;
use super::error::DbResultExt;
use super::state::AppState;
use super::validate;
use crate::error::AppError;
use crate::model::{limits, SettingsUpdate, SettingsValues, SettingsView, ASPECT_RATIOS};

const VALUES_KEY: &str = "values";
const LLM_KEY: &str = "secret.llm_api_key";

async fn read(pool: &AnyPool, key: &str) -> Result<Option<String>, AppError> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .db("reading settings")
}

async fn write<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    pool: E,
    key: &str,
    value: &str,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(value)
    .bind(now_ms())
    .execute(pool)
    .await
    .db("writing settings")?;
    Ok(())
}

async fn remove<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    pool: E,
    key: &str,
) -> Result<(), AppError> {
    sqlx::query("DELETE FROM settings WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await
        .db("removing a setting")?;
    Ok(())
}

pub async fn values(state: &AppState) -> Result<SettingsValues, AppError> {
    Ok(parse(read(state.pool(), VALUES_KEY).await?.as_deref()))
}

fn parse(stored: Option<&str>) -> SettingsValues {
    match stored {
        // A document written by another version may not parse; its defaults still work.
        Some(json) => serde_json::from_str(json).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored settings do not parse; using defaults");
            SettingsValues::default()
        }),
        None => SettingsValues::default(),
    }
}

/// Settings and key as background tasks see them: read from the database at most once a
/// second per process (a task would otherwise read both for every scene). A change made
/// here is seen at once; one made by another process within a second.
pub async fn for_tasks(state: &AppState) -> Result<(SettingsValues, Option<String>), AppError> {
    if let Ok(cache) = state.task_settings.lock() {
        if let Some((read, values, key)) = cache.as_ref() {
            if read.elapsed() < std::time::Duration::from_secs(1) {
                return Ok((values.clone(), key.clone()));
            }
        }
    }
    // One statement for both, so a key is never paired with another endpoint's settings.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM settings WHERE key IN ($1, $2)")
            .bind(VALUES_KEY)
            .bind(LLM_KEY)
            .fetch_all(state.pool())
            .await
            .db("reading settings")?;
    let find = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let values = parse(find(VALUES_KEY));
    let key = find(LLM_KEY).and_then(|sealed| state.secrets.open(sealed));
    if let Ok(mut cache) = state.task_settings.lock() {
        *cache = Some((std::time::Instant::now(), values.clone(), key.clone()));
    }
    Ok((values, key))
}

fn forget_cached(state: &AppState) {
    if let Ok(mut cache) = state.task_settings.lock() {
        *cache = None;
    }
}

/// The language-model key, decrypted. Never log or return it.
pub async fn llm_api_key(state: &AppState) -> Result<Option<String>, AppError> {
    let Some(sealed) = read(state.pool(), LLM_KEY).await? else {
        return Ok(None);
    };
    match state.secrets.open(&sealed) {
        Some(key) => Ok(Some(key)),
        None => {
            tracing::warn!(
                "the stored LLM API key cannot be decrypted with the current secret key"
            );
            Ok(None)
        }
    }
}

pub async fn view(state: &AppState) -> Result<SettingsView, AppError> {
    Ok(SettingsView {
        values: values(state).await?,
        llm_api_key_masked: llm_api_key(state).await?.map(|k| crypto::mask(&k)),
    })
}

pub fn validate(v: SettingsValues) -> Result<SettingsValues, AppError> {
    let short = limits::SHORT_TEXT_MAX_CHARS;
    Ok(SettingsValues {
        llm_base_url: validate::http_url("values.llm_base_url", &v.llm_base_url)?,
        llm_model: validate::text("values.llm_model", &v.llm_model, 1, short)?,
        llm_temperature: validate::range_f64(
            "values.llm_temperature",
            v.llm_temperature,
            0.0,
            2.0,
        )?,
        llm_timeout_secs: validate::range_u32(
            "values.llm_timeout_secs",
            v.llm_timeout_secs,
            1,
            600,
        )?,
        llm_json_schema: v.llm_json_schema,
        default_language: validate::text("values.default_language", &v.default_language, 1, short)?,
        default_tone: validate::text("values.default_tone", &v.default_tone, 1, short)?,
        default_target_seconds: validate::range_u32(
            "values.default_target_seconds",
            v.default_target_seconds,
            limits::TARGET_SECONDS_MIN,
            limits::TARGET_SECONDS_MAX,
        )?,
        default_scene_count: validate::range_u32(
            "values.default_scene_count",
            v.default_scene_count,
            limits::SCENE_COUNT_MIN,
            limits::SCENE_COUNT_MAX,
        )?,
        default_aspect_ratio: validate::one_of(
            "values.default_aspect_ratio",
            &v.default_aspect_ratio,
            &ASPECT_RATIOS,
        )?,
        default_visual_style: validate::text(
            "values.default_visual_style",
            &v.default_visual_style,
            1,
            short,
        )?,
        default_voice: validate::text("values.default_voice", &v.default_voice, 1, short)?,
        rate_generate_per_minute: validate::range_u32(
            "values.rate_generate_per_minute",
            v.rate_generate_per_minute,
            1,
            10_000,
        )?,
        rate_jobs_per_minute: validate::range_u32(
            "values.rate_jobs_per_minute",
            v.rate_jobs_per_minute,
            1,
            10_000,
        )?,
        storage_quota_mb: validate::range_u32(
            "values.storage_quota_mb",
            v.storage_quota_mb,
            0,
            10_000_000,
        )?,
        image_provider: validate::one_of("values.image_provider", &v.image_provider, &PROVIDERS)?,
        image_model: validate::text("values.image_model", &v.image_model, 1, short)?,
        image_size: image_size("values.image_size", &v.image_size)?,
        image_quality: validate::one_of(
            "values.image_quality",
            &v.image_quality,
            &[
                "auto", "low", "medium", "high", "xhigh", "max", "standard", "hd",
            ],
        )?,
        image_concurrency: validate::range_u32(
            "values.image_concurrency",
            v.image_concurrency,
            1,
            64,
        )?,
        image_per_minute: validate::range_u32(
            "values.image_per_minute",
            v.image_per_minute,
            0,
            100_000,
        )?,
        tts_provider: validate::one_of("values.tts_provider", &v.tts_provider, &PROVIDERS)?,
        tts_model: validate::text("values.tts_model", &v.tts_model, 1, short)?,
        tts_speed: validate::range_f64("values.tts_speed", v.tts_speed, 0.25, 4.0)?,
        tts_concurrency: validate::range_u32("values.tts_concurrency", v.tts_concurrency, 1, 64)?,
        tts_per_minute: validate::range_u32("values.tts_per_minute", v.tts_per_minute, 0, 100_000)?,
        media_timeout_secs: validate::range_u32(
            "values.media_timeout_secs",
            v.media_timeout_secs,
            5,
            900,
        )?,
        render_concurrency: validate::range_u32(
            "values.render_concurrency",
            v.render_concurrency,
            1,
            8,
        )?,
        video_height: match v.video_height {
            720 | 1080 => v.video_height,
            other => {
                return Err(AppError::validation(
                    "values.video_height",
                    format!("values.video_height must be 720 or 1080 (got {other})"),
                ))
            }
        },
        video_pause_ms: validate::range_u32("values.video_pause_ms", v.video_pause_ms, 0, 5_000)?,
        video_subtitles: v.video_subtitles,
        video_motion: v.video_motion,
        video_fade_ms: validate::range_u32("values.video_fade_ms", v.video_fade_ms, 0, 1_000)?,
        subtitle_size: validate::range_u32("values.subtitle_size", v.subtitle_size, 50, 200)?,
        subtitle_colour: colour("values.subtitle_colour", &v.subtitle_colour)?,
        subtitle_outline: validate::range_u32("values.subtitle_outline", v.subtitle_outline, 0, 6)?,
        subtitle_position: validate::one_of(
            "values.subtitle_position",
            &v.subtitle_position,
            &["bottom", "middle", "top"],
        )?,
        music_volume: validate::range_u32("values.music_volume", v.music_volume, 0, 100)?,
    })
}

const PROVIDERS: [&str; 2] = ["builtin", "openai"];

/// `#RRGGBB`, upper-cased.
fn colour(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    match value.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(value.to_uppercase())
        }
        _ => Err(AppError::validation(
            field,
            format!("{field} must be a colour like #FFFFFF (got {value:?})"),
        )),
    }
}

/// `auto`, or `WxH` with both sides between 64 and 4096.
fn image_size(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    if value == "auto" {
        return Ok(value.to_owned());
    }
    let parsed = value
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| (64..=4096).contains(w) && (64..=4096).contains(h));
    match parsed {
        Some((w, h)) => Ok(format!("{w}x{h}")),
        None => Err(AppError::validation(
            field,
            format!("{field} must be auto or WIDTHxHEIGHT, e.g. 1024x1536 (got {value:?})"),
        )),
    }
}

/// Applies the given fields over the current values. When the endpoint's origin changes
/// and no new key comes with it, the stored key is dropped: a key is only ever sent to the
/// host it was entered for.
#[tracing::instrument(name = "settings.update", skip_all)]
pub async fn update(state: &AppState, update: SettingsUpdate) -> Result<SettingsView, AppError> {
    let current = values(state).await?;
    let mut merged = serde_json::to_value(&current)
        .map_err(|e| super::error::internal("encoding settings", e))?;
    let known = merged.as_object().cloned().unwrap_or_default();
    for (field, value) in update.values {
        if !known.contains_key(&field) {
            return Err(AppError::validation(
                &format!("values.{field}"),
                format!("values.{field} is not a setting"),
            ));
        }
        merged[&field] = value;
        // Parsed after each field, so a value of the wrong type is named.
        if let Err(e) = serde_json::from_value::<SettingsValues>(merged.clone()) {
            return Err(AppError::validation(
                &format!("values.{field}"),
                format!("values.{field}: {e}"),
            ));
        }
    }
    let parsed: SettingsValues =
        serde_json::from_value(merged).map_err(|e| super::error::internal("settings", e))?;
    let new_values = validate(parsed)?;
    let key = match update.llm_api_key.as_deref().map(str::trim) {
        Some("") => Some(None),
        Some(k) => Some(Some(validate::text("llm_api_key", k, 1, 500)?)),
        None if origin(&new_values.llm_base_url) != origin(&current.llm_base_url) => Some(None),
        None => None,
    };
    let json = serde_json::to_string(&new_values)
        .map_err(|e| super::error::internal("encoding settings", e))?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    write(&mut *tx, VALUES_KEY, &json).await?;
    match key {
        Some(Some(k)) => write(&mut *tx, LLM_KEY, &state.secrets.seal(&k)).await?,
        Some(None) => remove(&mut *tx, LLM_KEY).await?,
        None => {}
    }
    tx.commit().await.db("committing settings")?;
    forget_cached(state);
    view(state).await
}

fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Back to the defaults. The stored key is kept while the endpoint stays the same host,
/// so resetting models and presets does not make an admin paste the key again.
pub async fn reset(state: &AppState) -> Result<SettingsView, AppError> {
    let current = values(state).await?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    remove(&mut *tx, VALUES_KEY).await?;
    if origin(&current.llm_base_url) != origin(&SettingsValues::default().llm_base_url) {
        remove(&mut *tx, LLM_KEY).await?;
    }
    tx.commit().await.db("committing settings")?;
    forget_cached(state);
    view(state).await
}
